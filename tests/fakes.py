"""An in-memory cluster implementing the Protocols of
:mod:`glance_rbd_tracked.ports`, for fast unit tests of the orchestration.

It models what the decisions depend on, the way librbd 16.2 does it (each
point checked against the real cluster in tests/functional):

* a clone points at its parent by image id and snapshot id, so renaming the
  parent, or moving the snapshot to the trash namespace, keeps the clone;
  a clone starts with a copy of its parent's metadata;
* an image with snapshots cannot be removed, a snapshot with clones cannot
  be removed; with clone format 2 an unprotected one moves to the trash
  namespace instead, and goes with its last clone; format 1 needs the
  snapshot protected;
* ``World.remove`` is a stock client's ``rbd remove``: with the pool option
  ``rbd_move_parent_to_trash_on_remove``, an image whose only snapshots are
  trash-namespace ones moves to the RBD trash (``user_parent``) and goes
  with its last clone; ``World.trash_move`` is ``rbd trash mv``,
  ``World.trash_restore`` ``rbd trash restore``.

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
from glance_rbd_tracked import specs

FSID = "6f1c1c4e-0000-4000-8000-00000000f51d"
NOW = datetime.datetime(2026, 11, 21, tzinfo=datetime.UTC)


@dataclasses.dataclass
class Snap:
    id: int
    name: str
    protected: bool = True
    namespace: str = "user"
    original: str = ""


@dataclasses.dataclass
class Image:
    id: str
    pool: str
    name: str
    data: bytearray = dataclasses.field(default_factory=bytearray)
    snaps: dict[int, Snap] = dataclasses.field(default_factory=dict)
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    parent: tuple[str, str, int] | None = None  # pool, image id, snap id
    clone_format: int = 0
    trash: core.Trash | None = None

    def snap(self, name: str) -> Snap | None:
        return next((s for s in self.snaps.values() if s.name == name), None)


class World:
    """The state of the fake cluster, shared by its adapters."""

    def __init__(self, fsid: str = FSID, clone_format: int = 2) -> None:
        self.fsid = fsid
        self.clone_format = clone_format
        self.pools = ("images", "vms", "volumes")
        self.move_parent_to_trash: set[str] = set()
        #: pools where the remover of a clone may not write: a parent's
        #: trash-namespace snapshot there stays when its last clone goes
        self.parent_writes_fail: set[str] = set()
        self.quotas: dict[str, int] = {}  # pool: max_bytes (0: none)
        self.capacity = 1 << 40  # bytes the pools share
        self.all: dict[tuple[str, str], Image] = {}  # (pool, id): live or trashed
        self.journals: dict[str, dict[str, str]] = {}
        self.pool_metadata: dict[str, dict[str, str]] = {}  # rbd pool metadata
        self.writers: dict[str, list[str]] = {}  # image id: clients
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

    # -- looking things up ------------------------------------------------------

    def names(self, pool: str) -> dict[str, Image]:
        """The pool's directory: live images by name."""
        return {i.name: i for (p, _), i in self.all.items()
                if p == pool and i.trash is None}

    def trashed(self, pool: str) -> list[Image]:
        return [i for (p, _), i in self.all.items()
                if p == pool and i.trash is not None]

    def image(self, pool: str, name: str) -> Image:
        try:
            return self.names(pool)[name]
        except KeyError:
            raise errors.NotFound(f"{pool}/{name}: no such image") from None

    def exists(self, pool: str, name: str) -> bool:
        return name in self.names(pool)

    def in_trash(self, pool: str, name: str) -> bool:
        return any(i.name == name for i in self.trashed(pool))

    def children(self, pool: str, image: Image, snap: str | int) -> list[str]:
        found = image.snap(snap) if isinstance(snap, str) else \
            image.snaps.get(snap)
        if found is None:
            return []
        return sorted(f"{i.pool}/{i.name}" for i in self.all.values()
                      if i.parent == (pool, image.id, found.id))

    def parent_of(self, image: Image) -> tuple[Image, Snap] | None:
        if image.parent is None:
            return None
        ppool, pid, snap_id = image.parent
        parent = self.all[ppool, pid]
        return parent, parent.snaps[snap_id]

    # -- what Nova, Cinder or an operator do, directly ----------------------

    def create(self, pool: str, name: str, data: bytes = b"",
               snaps: Iterable[str] = (), parent: str | None = None) -> Image:
        if name in self.names(pool):
            raise errors.AlreadyExists(f"{pool}/{name} exists")
        image = Image(id=f"{next(self._ids):012x}", pool=pool, name=name,
                      data=bytearray(data))
        if parent is not None:
            ppool, pname, psnap = specs.SnapSpec.parse(parent).parts
            above = self.image(ppool, pname)
            snap = above.snap(psnap)
            if snap is None:
                raise errors.NotFound(f"{parent}: no such snapshot")
            if self.clone_format == 1 and not snap.protected:
                raise errors.ClusterError(f"{parent} is not protected: "
                                          "Invalid argument")
            image.parent = (ppool, above.id, snap.id)
            image.clone_format = self.clone_format
            image.metadata = dict(above.metadata)
            image.data = bytearray(above.data)
        self.all[pool, image.id] = image
        for snap_name in snaps:
            self.snapshot(pool, name, snap_name)
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
        image = self.image(pool, name)
        if image.snap(snap) is not None:
            raise errors.AlreadyExists(f"{pool}/{name}@{snap} exists")
        sid = next(self._ids)
        image.snaps[sid] = Snap(sid, snap)

    def remove(self, pool: str, name: str) -> None:
        """A stock client's ``rbd remove``."""
        image = self.image(pool, name)
        if image.snaps:
            if (pool in self.move_parent_to_trash and all(
                    s.namespace == "trash" for s in image.snaps.values())):
                image.trash = core.Trash(core.TRASH_USER_PARENT, NOW, NOW)
                return
            raise errors.InUse(f"{pool}/{name} has snapshots")
        self.drop(image)

    def trash_move(self, pool: str, name: str) -> None:
        """``rbd trash mv``: what Cinder does when a removal fails."""
        self.image(pool, name).trash = core.Trash(core.TRASH_USER, NOW, NOW)

    def trash_restore(self, pool: str, image_id: str) -> None:
        """``rbd trash restore``; librbd's ``rbd remove`` does it too when
        the removal it parked in the trash fails."""
        self.all[pool, image_id].trash = None

    def drop(self, image: Image) -> None:
        """The image goes; its parent lets go of it as librbd does."""
        del self.all[image.pool, image.id]
        self.detach(image)

    def detach(self, image: Image) -> None:
        above = self.parent_of(image)
        image.parent = None
        if above is None:
            return
        parent, snap = above
        if parent.pool in self.parent_writes_fail:
            return  # librbd may not write there: the snapshot stays
        if snap.namespace == "trash" and not self.children(
                parent.pool, parent, snap.id):
            del parent.snaps[snap.id]
            if parent.trash is not None and not parent.snaps and \
                    parent.trash.source == core.TRASH_USER_PARENT:
                self.drop(parent)


class FakeImages:
    def __init__(self, world: World) -> None:
        self.world = world

    def state(self, pool: str, name: str) -> core.ImageState:
        self.world.enter("state", pool, name)
        image = self.world.names(pool).get(name)
        if image is None:
            named = [i for i in self.world.trashed(pool) if i.name == name]
            if not named:
                raise errors.NotFound(f"{pool}/{name}: no such image")
            image = named[-1]
        return self._state(image)

    def _state(self, image: Image) -> core.ImageState:
        world = self.world
        snaps = tuple(core.Snap(s.name, children=tuple(world.children(
            image.pool, image, s.id)), protected=s.protected,
            namespace=s.namespace, original=s.original)
            for s in image.snaps.values())
        try:
            records = schema.records_of(image.id, image.metadata)
        except errors.CorruptMetadata as exc:
            raise errors.CorruptMetadata(f"{image.pool}/{image.name}: "
                                         f"{exc}") from None
        return core.ImageState(
            pool=image.pool, name=image.name, image_id=image.id, snaps=snaps,
            records=records, parent=self._parent(image), trash=image.trash)

    def trash(self, pool: str) -> list[tuple[str, str]]:
        return [(i.name, i.id) for i in self.world.trashed(pool)]

    def writers(self, pool: str, image_id: str) -> tuple[str, ...]:
        return tuple(self.world.writers.get(image_id, ()))

    def by_id(self, pool: str, image_id: str) -> core.ImageState:
        self.world.enter("state", pool, image_id)
        try:
            return self._state(self.world.all[pool, image_id])
        except KeyError:
            raise errors.NotFound(f"{pool}: no image {image_id}") from None

    def parent(self, pool: str, name: str) -> str | None:
        return self._parent(self.world.image(pool, name))

    def _parent(self, image: Image) -> str | None:
        above = self.world.parent_of(image)
        if above is None:
            return None
        parent, snap = above
        return f"{parent.pool}/{parent.name}@{snap.name}"

    def list_images(self, pool: str) -> list[str]:
        return sorted(self.world.names(pool))


class FakeChanges:
    def __init__(self, world: World) -> None:
        self.world = world

    def _same(self, state: core.ImageState) -> Image:
        image = self.world.all.get((state.pool, state.image_id))
        if image is None or image.name != state.name or \
                (image.trash is None) != (state.trash is None):
            if state.trash is None and not self.world.exists(state.pool,
                                                             state.name):
                raise errors.NotFound(f"{state.spec}: no such image")
            raise errors.Conflict(f"{state.spec} was replaced")
        return image

    def apply(self, state: core.ImageState, decision: core.Decision) -> None:
        self.world.enter("apply", state, decision)
        image = self._same(state)
        if isinstance(decision, (core.Remove, core.Trim)):
            for name in decision.snapshots:
                snap = image.snap(name)
                if snap is not None:
                    if self.world.children(state.pool, image, snap.id):
                        raise errors.Conflict(f"{state.spec}@{name} gained "
                                              "a clone")
                    del image.snaps[snap.id]
                image.metadata.pop(schema.SNAP_KEY_PREFIX + (
                    snap.original if snap and snap.original else name), None)
        if isinstance(decision, core.Remove):
            if image.snaps:
                raise errors.Conflict(f"{state.spec} still has snapshots")
            self.world.drop(image)
        elif isinstance(decision, core.Retire):
            for record in decision.records:
                image.metadata.__setitem__(*schema.dump(record))
            if decision.new_name != state.name:
                if decision.new_name in self.world.names(state.pool):
                    raise errors.AlreadyExists(
                        f"{state.pool}/{decision.new_name} exists")
                image.name = decision.new_name

    def set_records(self, pool: str, name: str, image_id: str,
                    records: Iterable[schema.Record]) -> None:
        self.world.enter("set_records", pool, name)
        image = self._by_id(pool, name, image_id)
        for record in records:
            image.metadata.__setitem__(*schema.dump(record))

    def _by_id(self, pool: str, name: str, image_id: str) -> Image:
        image = self.world.image(pool, name)
        if image.id != image_id:
            raise errors.Conflict(f"{pool}/{name} was replaced")
        return image

    def snapshot(self, pool: str, name: str, image_id: str,
                 snapshot: str) -> None:
        self.world.enter("snapshot", pool, name, snapshot)
        self._by_id(pool, name, image_id)
        self.world.snapshot(pool, name, snapshot)

    def clone(self, parent: str, pool: str, name: str) -> int:
        self.world.enter("clone", parent, pool, name)
        return self.world.clone(parent, pool, name).clone_format

    def trash_snapshot(self, pool: str, name: str, image_id: str,
                       snapshot: str) -> None:
        self.world.enter("trash_snapshot", pool, name, snapshot)
        image = self._by_id(pool, name, image_id)
        snap = image.snap(snapshot)
        if snap is None:
            raise errors.NotFound(f"{pool}/{name}@{snapshot}")
        clones = [i for i in self.world.all.values()
                  if i.parent == (pool, image.id, snap.id)]
        if not clones:
            raise errors.Conflict(f"{pool}/{name}@{snapshot} has no clone")
        if any(c.clone_format < 2 for c in clones):
            raise errors.InUse(f"{pool}/{name}@{snapshot}: format-1 clones")
        snap.namespace, snap.original = "trash", snap.name
        snap.name, snap.protected = f"trash-{snap.id:08x}", False

    def seal(self, pool: str, name: str, record: schema.OwnerRecord) -> None:
        self.world.enter("seal", pool, name)
        image = self.world.image(pool, name)
        image.metadata.__setitem__(*schema.dump(
            dataclasses.replace(record, image_id=image.id)))
        self.world.snapshot(pool, name, record.snapshot)

    def copy(self, source: str, pool: str, name: str) -> None:
        self.world.enter("copy", source, pool, name)
        spool, simage, _ = specs.SnapSpec.parse(source).parts
        data = self.world.image(spool, simage).data
        self.world.create(pool, name, bytes(data))

    def flatten(self, state: core.ImageState,
                on_progress: Callable[[int, int], None] | None = None
                ) -> None:
        self.world.enter("flatten", state.pool, state.name)
        self.world.detach(self._same(state))
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

    def read_sized(self, pool: str, name: str, snapshot: str | None, *,
                   offset: int = 0, length: int | None = None,
                   chunk_size: int = 8 << 20, depth: int = 2
                   ) -> tuple[int, Iterator[bytes]]:
        return self.size(pool, name, snapshot), self.read(
            pool, name, snapshot, offset=offset, length=length,
            chunk_size=chunk_size, depth=depth)

    def write_new(self, pool: str, name: str, chunks: Iterable[bytes], *,
                  size: int, order: int, record: schema.OwnerRecord,
                  thin: bool = False, depth: int = 4,
                  on_chunk: Callable[[bytes], None] = lambda c: None) -> int:
        """As the adapter: a failure removes the new image, unless the
        cluster did not answer (a ClusterError with ``timed_out``)."""
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
            self.world.snapshot(pool, name, record.snapshot)
        except errors.ClusterError as exc:
            if not exc.timed_out:
                self.world.drop(image)
            raise
        except BaseException:
            self.world.drop(image)
            raise
        return len(image.data)


class FakeSpace:
    """A pool's quota, and its images' data as what it stores."""

    def __init__(self, world: World) -> None:
        self.world = world

    def of(self, pool: str) -> core.PoolSpace:
        self.world.enter("space", pool)
        stored = {p: 0 for p in self.world.pools}
        for (p, _), image in self.world.all.items():
            stored[p] = stored.get(p, 0) + len(image.data)
        return core.PoolSpace(pool, quota=self.world.quotas.get(pool, 0),
                              used=stored.get(pool, 0),
                              available=self.world.capacity
                              - sum(stored.values()))


class FakeSetup:
    """The pools' RBD metadata (the chain policy and the services' views);
    doctor's facts are read from the real cluster only."""

    def __init__(self, world: World) -> None:
        self.world = world

    def pool_metadata(self, pool: str, key: str) -> str | None:
        self.world.enter("pool_metadata", pool, key)
        return self.world.pool_metadata.get(pool, {}).get(key)

    def pool_metadata_with(self, pool: str, prefix: str) -> dict[str, str]:
        self.world.enter("pool_metadata_with", pool, prefix)
        return {k: v for k, v in self.world.pool_metadata.get(pool, {}).items()
                if k.startswith(prefix)}

    def set_pool_metadata(self, pool: str, key: str, value: str) -> None:
        self.world.enter("set_pool_metadata", pool, key, value)
        self.world.pool_metadata.setdefault(pool, {})[key] = value


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
        self.space = FakeSpace(self.world)
        self.setup = FakeSetup(self.world)

    def fsid(self) -> str:
        return self.world.fsid
