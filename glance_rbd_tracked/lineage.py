"""The family tree of an image: its ancestors and every clone below it.

:func:`walk` reads it from the cluster and :func:`depth` counts the
ancestors, both through :func:`climb`; :func:`to_text`, :func:`to_dot` and
:func:`to_json` render a tree without I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
import dataclasses
import itertools
import json
from typing import Any

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import ports
from glance_rbd_tracked import schema
from glance_rbd_tracked import specs


@dataclasses.dataclass(frozen=True)
class Node:
    spec: str
    role: str
    marks: tuple[str, ...]
    snaps: tuple[tuple[str, tuple[Node, ...]], ...] = ()
    focus: bool = False


_ROLES = {schema.Kind.UPLOAD: "glance image",
          schema.Kind.CHAIN: "glance image (chain clone)",
          schema.Kind.COPY: "glance image (copy)",
          schema.Kind.STOCK: "glance image (stock driver)"}


def role(state: core.ImageState) -> str:
    records = state.records
    if records.owner is not None:
            return _ROLES[records.owner.kind]
    if records.retired is not None:
        return "retired disk"
    if records.snaps:
        return "chain source"
    return "image"


def marks(state: core.ImageState, policy: core.Policy) -> tuple[str, ...]:
    out = []
    if state.trash is not None:
        out.append(trash_mark(state.trash))
    if state.removing:
        out.append("half removed (its removal did not finish)")
    if state.records.retired is not None:
        out.append(f"pending deletion since {state.records.retired.since}")
    if core.owned_snapshots(state, policy) is not None:
        out.append("owned by the store")
    if state.records.inherited:
        out.append("inherited records ignored")
    origin = state.records.origin
    if origin is not None:
        out.append(f"a copy of {origin.pool}/{origin.source_id}@"
                   f"{origin.snapshot} (snapshot id {origin.source_snap_id})"
                   f" of cluster {origin.fsid}")
    return tuple(out)


def trash_mark(trash: core.Trash) -> str:
    """How an image in the RBD trash is shown."""
    return (f"in the RBD trash ({trash.source}) since "
            f"{schema.timestamp(trash.deleted)}")


def climb(parent: str | None,
          parent_of: Callable[[str, str], str | None],
          limit: int = 1000) -> Iterator[tuple[str, str, str]]:
    """``(pool, image, snapshot)`` of each ancestor, nearest first, from the
    ``parent`` spec of an image; ``parent_of(pool, image)`` reads the next
    one up (and raises NotFound for an ancestor that is not there)."""
    while parent and limit > 0:
        pool, name, snap = specs.SnapSpec.parse(parent).parts
        above = parent_of(pool, name)
        yield pool, name, snap
        parent, limit = above, limit - 1


def depth(images: ports.ImageReads, pool: str, name: str) -> int:
    """How many ancestors the image has (0 for a flat image)."""
    return sum(1 for _ in climb(images.parent(pool, name), images.parent))


def walk(images: ports.ImageReads, pool: str, name: str,
         policy: core.Policy, limit: int = 1000) -> list[Node]:
    """Ancestors (root first) ending with the image and its descendants."""
    state = images.state(pool, name)
    read: dict[tuple[str, str], core.ImageState] = {}

    def parent_of(ppool: str, pname: str) -> str | None:
        read[ppool, pname] = images.state(ppool, pname)
        return read[ppool, pname].parent

    ancestors: list[tuple[core.ImageState, str]] = []
    try:
        for ppool, pname, psnap in climb(state.parent, parent_of, limit):
            ancestors.append((read[ppool, pname], psnap))
    except errors.NotFound:
        pass
    seen = [0]

    def down(st: core.ImageState, focus: bool = False) -> Node:
        snaps = []
        for snap in st.snaps:
            kids = []
            for child in snap.children:
                seen[0] += 1
                if seen[0] > limit:
                    break
                cpool, cname = specs.ImageSpec.parse(child).parts
                try:
                    kids.append(down(images.state(cpool, cname)))
                except errors.NotFound:  # in the trash, or just removed
                    kids.append(Node(child, "gone", ()))
            snaps.append((f"{snap.name}" + ("" if snap.namespace == "user"
                                             else f" ({snap.namespace})"),
                          tuple(kids)))
        return Node(st.spec, role(st), marks(st, policy), tuple(snaps), focus)

    chain = [Node(a.spec, role(a), marks(a, policy), ((s, ()),))
             for a, s in reversed(ancestors)]
    return [*chain, down(state, focus=True)]


def to_text(nodes: list[Node]) -> str:
    lines: list[str] = []
    indent = 0
    for node in nodes[:-1]:
        lines.append("  " * indent + _label(node))
        lines.append("  " * indent + f"  @{node.snaps[0][0]}")
        indent += 2
    _render(nodes[-1], indent, lines)
    return "\n".join(lines)


def _render(node: Node, indent: int, lines: list[str]) -> None:
    lines.append("  " * indent + _label(node) + ("   <==" if node.focus else ""))
    for snap, kids in node.snaps:
        lines.append("  " * indent + f"  @{snap}")
        for kid in kids:
            _render(kid, indent + 2, lines)


def _label(node: Node) -> str:
    extra = f" [{'; '.join(node.marks)}]" if node.marks else ""
    return f"{node.spec} ({node.role}){extra}"


def to_dot(nodes: list[Node]) -> str:
    lines = ["digraph lineage {", "  rankdir=TB;", "  node [shape=box];"]

    def add(node: Node) -> None:
        style = ", style=bold" if node.focus else ""
        if any(m.startswith(("pending deletion", "in the RBD trash"))
               for m in node.marks):
            style += ", color=red"
        label = "\\n".join([node.spec, node.role, *node.marks])
        lines.append(f'  "{node.spec}" [label="{label}"{style}];')

    def edges(node: Node) -> None:
        for snap, kids in node.snaps:
            for kid in kids:
                add(kid)
                lines.append(f'  "{node.spec}" -> "{kid.spec}" '
                             f'[label="@{snap}"];')
                edges(kid)

    for upper, lower in itertools.pairwise(nodes):
        add(upper)
        lines.append(f'  "{upper.spec}" -> "{lower.spec}" '
                     f'[label="@{upper.snaps[0][0]}"];')
    add(nodes[-1])
    edges(nodes[-1])
    lines.append("}")
    return "\n".join(lines)


def to_json(nodes: list[Node]) -> str:
    def plain(node: Node) -> dict[str, Any]:
        return {"spec": node.spec, "role": node.role, "marks": list(node.marks),
                "snapshots": [{"name": s, "clones": [plain(k) for k in kids]}
                              for s, kids in node.snaps]}
    return json.dumps({"ancestors": [plain(n) for n in nodes[:-1]],
                       "image": plain(nodes[-1])}, indent=2, sort_keys=True)
