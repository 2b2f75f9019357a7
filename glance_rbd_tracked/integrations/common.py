"""What the Nova and Cinder integrations share.  Imports neither of them.

Rules this module owns:

* An integration changes Nova or Cinder only when every method it replaces
  or calls has the parameters it was written against: their names and
  kinds, not their annotations nor the release's number (:func:`check`).
  Otherwise it leaves them alone.  It replaces a method by wrapping it
  (:func:`wrap`): the product's own code still runs, and a call with a
  parameter the integration does not know goes to it unchanged.
* On the fall-back paths an integration catches only the store's own
  errors (:class:`~glance_rbd_tracked.errors.TrackedError`); anything else
  is a bug and propagates.
* A disk or volume is the store's business (:func:`has_chains`) when the
  store made chain snapshots of it or retired it; everything else goes
  through Nova's or Cinder's stock code, unchanged.
* The Glance pool a disk's chains went to is read from the disk's own
  records (:func:`glance_pool`), so destroying a disk needs no setting.
* Nova and Cinder run with the chain policy kept in Glance's pool
  (:func:`policies`); their ``chain_pools`` option counts only with their
  ``policy_override`` option, and each records its view for doctor.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
import contextlib
import dataclasses
import functools
import importlib
import inspect
import logging
from typing import Any
from typing import TypeVar

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import policy
from glance_rbd_tracked import settings
from glance_rbd_tracked import specs

#: Every chain snapshot's name starts with this (``rbd_tracked-<image id>``).
CHAIN_SNAPSHOT_PREFIX = core.chain_snapshot_name("")

LOG = logging.getLogger(__name__)
T = TypeVar("T")


#: A parameter as the integration sees it: its name, its kind, and whether
#: it has a default.  Annotations and default values do not count.
Param = tuple[str, inspect._ParameterKind, bool]


@dataclasses.dataclass(frozen=True)
class Known:
    """What an integration needs of a product, and what it was tested on.

    ``needs`` maps ``module:Class.attribute`` to the parameters the
    integration was written against, as Python source without annotations,
    e.g. ``"(self, volume, pool=None)"`` (:func:`parameters`).
    ``tested`` names the release lines it ran against; it is said in the
    log line, it is not a gate (:func:`check`).
    """

    product: str
    tested: tuple[str, ...]  # version prefixes: ("34.",)
    needs: Mapping[str, str]

    def tested_on(self, version: str) -> bool:
        return version.startswith(self.tested)

    def tested_text(self) -> str:
        return ", ".join(f"{series}x" for series in self.tested)


def parameters(source: str) -> tuple[Param, ...]:
    """The parameters of ``"(self, volume, pool=None, *, force=False)"``."""
    tree = ast.parse(f"def f{source}: pass", mode="exec")
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    args = function.args
    kind = inspect.Parameter
    positional = [(a.arg, kind.POSITIONAL_ONLY) for a in args.posonlyargs] + \
        [(a.arg, kind.POSITIONAL_OR_KEYWORD) for a in args.args]
    first_default = len(positional) - len(args.defaults)
    found: list[Param] = [(name, k, i >= first_default)
                          for i, (name, k) in enumerate(positional)]
    if args.vararg is not None:
        found.append((args.vararg.arg, kind.VAR_POSITIONAL, False))
    found += [(a.arg, kind.KEYWORD_ONLY, d is not None)
              for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    if args.kwarg is not None:
        found.append((args.kwarg.arg, kind.VAR_KEYWORD, False))
    return tuple(found)


def resolve(path: str) -> Any:
    """The object named ``module:Class.attribute``."""
    module, _, attributes = path.partition(":")
    obj: Any = importlib.import_module(module)
    for name in filter(None, attributes.split(".")):
        obj = getattr(obj, name)
    return obj


def mismatch(actual: inspect.Signature, expected: Sequence[Param]
             ) -> str | None:
    """Why ``actual`` cannot be called (or stood in for) as ``expected``
    says, or None.  ``expected`` must be its leading parameters with the
    same names and kinds (and a default where ``expected`` has one); any
    parameter after them must have a default: a caller that does not know
    it need not pass it."""
    have = list(actual.parameters.values())
    for position, (name, kind, default) in enumerate(expected, 1):
        if position > len(have):
            return f"it has no parameter {name!r}"
        param = have[position - 1]
        if param.name != name:
            return f"its parameter {position} is {param.name!r}, not {name!r}"
        if param.kind is not kind:
            return (f"{name!r} is {param.kind.description}, not "
                    f"{kind.description}")
        if default and param.default is param.empty:
            return f"{name!r} has no default"
    for param in have[len(expected):]:
        if param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD) \
                and param.default is param.empty:
            return f"it requires {param.name!r} too"
    return None


def check(known: Known, find: Callable[[str], Any] = resolve) -> str | None:
    """Why the integration must leave the product alone, or None when
    everything it replaces or calls is there with the parameters it needs.
    The release's number is not asked: a later release that kept them is
    served, one that changed them (a distribution's patch too) is not."""
    for path, source in known.needs.items():
        try:
            actual = inspect.signature(find(path))
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            return f"{path} is not there ({exc})"
        why = mismatch(actual, parameters(source))
        if why is not None:
            return f"{path} is {actual}: {why}"
    return None


def wrap(stock: Callable[..., T], source: str,
         ours: Callable[..., T]) -> Callable[..., T]:
    """``stock`` with ``ours`` in its place, for the product's callers.

    ``ours(stock, *args, **kwargs)`` gets every call that passes only the
    parameters of ``source`` (those :func:`check` verified), bound to their
    names as ``source`` has them; a call that
    passes a parameter the integration does not know (a later release's)
    goes to ``stock`` unchanged.  The result has ``stock``'s signature, so
    :func:`check` still passes on it."""
    known = {name for name, _, _ in parameters(source)}
    signature = inspect.signature(stock)

    @functools.wraps(stock)
    def replacement(*args: Any, **kwargs: Any) -> T:
        bound = signature.bind(*args, **kwargs)
        unknown = sorted(set(bound.arguments) - known)
        if unknown:
            LOG.info("glance_rbd_tracked: %s with %s: stock code",
                     stock.__qualname__, ", ".join(unknown))
            return stock(*args, **kwargs)
        return ours(stock, *bound.args, **bound.kwargs)

    replacement.__module__ = ours.__module__
    return replacement


def has_chains(state: core.ImageState) -> bool:
    """The store made chain snapshots of this disk, or retired it."""
    records = state.records
    return bool(records.snaps or records.retired is not None
                or any(s.name.startswith(CHAIN_SNAPSHOT_PREFIX)
                       for s in state.snaps))


def glance_pool(state: core.ImageState) -> str | None:
    """The pool of the chain images made from this disk, from its records."""
    for record in state.records.snaps:
        with contextlib.suppress(errors.Invalid):
            return specs.ImageSpec.parse(record.clone).pool_spec
    return None


def policies(service: str, override_option: str, override: bool,
             chain_pools: Sequence[str] | None) -> settings.Policies:
    """The chain policy ``service`` runs with: the cluster's, unless
    ``override`` (its option ``override_option``); then its
    ``chain_pools`` (None: unset) over the defaults."""
    return settings.Policies(
        policy.Local(override=bool(override),
                     chain_pools=None if chain_pools is None
                     else frozenset(chain_pools)),
        service=service, override_option=override_option)
