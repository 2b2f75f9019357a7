"""An in-memory cluster implementing the Protocols of
:mod:`glance_rbd_tracked.ports`, for fast unit tests of the orchestration.

It models what the decisions depend on, the way librbd does it: a clone
points at its parent by image id and snapshot (so renaming the parent keeps
the clone), a clone starts with a copy of its parent's metadata, an image
with snapshots cannot be removed, a snapshot with clones cannot be removed.
The adapter's re-checks before destructive steps raise Conflict as the real
one does.  ``World.fail`` and ``World.before`` put faults and other
workers' actions between the steps.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
import dataclasses
import datetime
import itertools
from typing import Any

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import schema

FSID = "6f1c1c4e-0000-4000-8000-00000000f51d"
NOW = datetime.datetime(2026, 11, 21, tzinfo=datetime.UTC)


@dataclasses.dataclass
class Snap:
    name: str
    protected: bool = True
    namespace: str = "user"


@dataclasses.dataclass
class Image:
    id: str
    data: bytearray = dataclasses.field(default_factory=bytearray)
    snaps: dict[str, Snap] = dataclasses.field(default_factory=dict)
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    parent: tuple[str, str, str] | None = None  # pool, image id, snapshot


class World:
    """The state of the fake cluster, shared by its adapters."""

    def __init__(self, fsid: str = FSID) -> None:
        self.fsid = fsid
        self.pools: dict[str, dict[str, Image]] = {
            "images": {}, "vms": {}, "volumes": {}}
        self.journals: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[str, tuple]] = []
        self._faults: dict[str, list[BaseException]] = {}
        self._before: dict[str, list[Callable[..., None]]] = {}
        self._ids = itertools.count(1)

    # -- faults and interleavings ------------------------------------------

    def fail(self, method: str, exc: BaseException, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` raise ``exc``."""
        self._faults.setdefault(method, []).extend([exc] * times)

    def before(self, method: str, action: Callable[..., None]) -> None:
        """Run ``action(*args)`` once, right before the next call of
        ``method`` (another worker acting at that moment)."""
        self._before.setdefault(method, []).append(action)

    def enter(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        actions = self._before.get(method)
        if actions:
            actions.pop(0)(*args)
        faults = self._faults.get(method)
        if faults:
            raise faults.pop(0)

    # -- what Nova, Cinder or an operator do, directly ----------------------

    def create(self, pool: str, name: str, data: bytes = b"",
               snaps: Iterable[str] = (), parent: str | None = None) -> Image:
        if name in self.pools[pool]:
            raise errors.AlreadyExists(f"{pool}/{name} exists")
        image = Image(id=f"{next(self._ids):012x}", data=bytearray(data))
        if parent is not None:
            ppool, pname, psnap = core.parent_of(parent)
            above = self.image(ppool, pname)
            if psnap not in above.snaps:
                raise errors.NotFound(f"{parent}: no such snapshot")
            image.parent = (ppool, above.id, psnap)
            image.metadata = dict(above.metadata)
            image.data = bytearray(above.data)
        for snap in snaps:
            image.snaps[snap] = Snap(snap)
        self.pools[pool][name] = image
        return image

    def upload(self, name: str, data: bytes = b"glance image",
               pool: str = "images") -> Image:
        """What the driver's add() leaves: an owned image with ``snap``."""
        image = self.create(pool, name, data, snaps=[core.STOCK_SNAPSHOT])
        record = dataclasses.replace(core.owner_record(
            schema.Kind.UPLOAD, NOW), image_id=image.id)
        image.metadata.__setitem__(*schema.dump(record))
        return image

    def clone(self, parent: str, pool: str, name: str) -> Image:
        return self.create(pool, name, parent=parent)

    def snapshot(self, pool: str, name: str, snap: str) -> None:
        self.image(pool, name).snaps[snap] = Snap(snap)

    def remove(self, pool: str, name: str) -> None:
        image = self.image(pool, name)
        if image.snaps:
            raise errors.InUse(f"{pool}/{name} has snapshots")
        del self.pools[pool][name]

    def image(self, pool: str, name: str) -> Image:
        try:
            return self.pools[pool][name]
        except KeyError:
            raise errors.NotFound(f"{pool}/{name}: no such image") from None

    def exists(self, pool: str, name: str) -> bool:
        return name in self.pools[pool]

    def children(self, pool: str, image: Image, snap: str) -> list[str]:
        return sorted(f"{p}/{n}" for p, names in self.pools.items()
                      for n, i in names.items()
                      if i.parent == (pool, image.id, snap))

    def name_of(self, pool: str, image_id: str) -> str:
        return next(n for n, i in self.pools[pool].items() if i.id == image_id)


class FakeImages:
    def __init__(self, world: World) -> None:
        self.world = world

    def fsid(self) -> str:
        return self.world.fsid

    def state(self, pool: str, name: str) -> core.ImageState:
        self.world.enter("state", pool, name)
        image = self.world.image(pool, name)
        snaps = tuple(core.Snap(s.name,
                                children=tuple(self.world.children(
                                    pool, image, s.name)),
                                protected=s.protected, namespace=s.namespace)
                      for s in image.snaps.values())
        return core.ImageState(
            pool=pool, name=name, image_id=image.id, snaps=snaps,
            records=schema.records_of(image.id, image.metadata),
            parent=self._parent(image))

    def parent(self, pool: str, name: str) -> str | None:
        return self._parent(self.world.image(pool, name))

    def _parent(self, image: Image) -> str | None:
        if image.parent is None:
            return None
        ppool, pid, psnap = image.parent
        return f"{ppool}/{self.world.name_of(ppool, pid)}@{psnap}"

    def list_images(self, pool: str) -> list[str]:
        return sorted(self.world.pools[pool])


class FakeChanges:
    def __init__(self, world: World) -> None:
        self.world = world

    def _same(self, pool: str, name: str, image_id: str) -> Image:
        image = self.world.image(pool, name)
        if image.id != image_id:
            raise errors.Conflict(f"{pool}/{name} was replaced")
        return image

    def apply(self, state: core.ImageState, decision: core.Decision) -> None:
        self.world.enter("apply", state, decision)
        image = self._same(state.pool, state.name, state.image_id)
        if isinstance(decision, (core.Remove, core.Trim)):
            for snap in decision.snapshots:
                if self.world.children(state.pool, image, snap):
                    raise errors.Conflict(f"{state.spec}@{snap} gained a "
                                          "clone")
                image.snaps.pop(snap, None)
                image.metadata.pop(schema.SNAP_KEY_PREFIX + snap, None)
        if isinstance(decision, core.Remove):
            if image.snaps:
                raise errors.Conflict(f"{state.spec} still has snapshots")
            del self.world.pools[state.pool][state.name]
        elif isinstance(decision, core.Retire):
            for record in decision.records:
                image.metadata.__setitem__(*schema.dump(record))
            if decision.new_name != state.name:
                if decision.new_name in self.world.pools[state.pool]:
                    raise errors.AlreadyExists(
                        f"{state.pool}/{decision.new_name} exists")
                del self.world.pools[state.pool][state.name]
                self.world.pools[state.pool][decision.new_name] = image

    def set_records(self, pool: str, name: str, image_id: str,
                    records: Iterable[schema.Record]) -> None:
        self.world.enter("set_records", pool, name)
        image = self._same(pool, name, image_id)
        for record in records:
            image.metadata.__setitem__(*schema.dump(record))

    def snapshot(self, pool: str, name: str, image_id: str,
                 snapshot: str) -> None:
        self.world.enter("snapshot", pool, name, snapshot)
        image = self._same(pool, name, image_id)
        if snapshot in image.snaps:
            raise errors.AlreadyExists(f"{pool}/{name}@{snapshot} exists")
        image.snaps[snapshot] = Snap(snapshot)

    def clone(self, parent: str, pool: str, name: str) -> None:
        self.world.enter("clone", parent, pool, name)
        self.world.clone(parent, pool, name)

    def seal(self, pool: str, name: str, record: schema.OwnerRecord) -> None:
        self.world.enter("seal", pool, name)
        image = self.world.image(pool, name)
        image.metadata.__setitem__(*schema.dump(
            dataclasses.replace(record, image_id=image.id)))
        image.snaps[record.snapshot] = Snap(record.snapshot)

    def copy(self, source: str, pool: str, name: str) -> None:
        self.world.enter("copy", source, pool, name)
        spool, simage, _ = core.parent_of(source)
        data = self.world.image(spool, simage).data
        self.world.create(pool, name, bytes(data))

    def flatten(self, pool: str, name: str,
                on_progress: Callable[[int, int], None] | None = None
                ) -> None:
        self.world.enter("flatten", pool, name)
        self.world.image(pool, name).parent = None
        if on_progress:
            on_progress(1, 1)


class FakeData:
    def __init__(self, world: World) -> None:
        self.world = world

    def size(self, pool: str, name: str, snapshot: str | None) -> int:
        return len(self.world.image(pool, name).data)

    def read(self, pool: str, name: str, snapshot: str | None, *,
             offset: int = 0, length: int | None = None,
             chunk_size: int = 8 << 20, depth: int = 2) -> Iterator[bytes]:
        data = bytes(self.world.image(pool, name).data)
        end = len(data) if length is None else min(len(data), offset + length)
        for start in range(offset, end, chunk_size):
            yield data[start:min(end, start + chunk_size)]

    def write_new(self, pool: str, name: str, chunks: Iterable[bytes], *,
                  size: int, order: int, record: schema.OwnerRecord,
                  thin: bool = False, depth: int = 4,
                  on_chunk: Callable[[bytes], None] = lambda c: None) -> int:
        self.world.enter("write_new", pool, name)
        image = self.world.create(pool, name)
        try:
            image.metadata.__setitem__(*schema.dump(
                dataclasses.replace(record, image_id=image.id)))
            for chunk in chunks:
                self.world.enter("write", pool, name)
                image.data += chunk
                on_chunk(chunk)
            if size and len(image.data) != size:
                raise errors.SizeMismatch(f"{len(image.data)} of {size}")
            image.snaps[record.snapshot] = Snap(record.snapshot)
        except BaseException:
            del self.world.pools[pool][name]
            raise
        return len(image.data)


class FakeJournal:
    def __init__(self, world: World) -> None:
        self.world = world

    def entries(self, pool: str) -> dict[str, str]:
        return dict(self.world.journals.get(pool, {}))

    def update(self, pool: str, put: dict[str, str] | None = None,
               remove: Iterable[str] = ()) -> None:
        self.world.enter("journal", pool, put, remove)
        journal = self.world.journals.setdefault(pool, {})
        journal.update(put or {})
        for key in remove:
            journal.pop(key, None)


@dataclasses.dataclass
class FakeCeph:
    """A :class:`glance_rbd_tracked.ports.Backend` in memory."""

    world: World = dataclasses.field(default_factory=World)

    def __post_init__(self) -> None:
        self.images = FakeImages(self.world)
        self.changes = FakeChanges(self.world)
        self.data = FakeData(self.world)
        self.journal = FakeJournal(self.world)

    def fsid(self) -> str:
        return self.world.fsid
