"""The few adapter calls the orchestration needs, one Protocol per concern.

:mod:`glance_rbd_tracked.ceph` implements them against librados and librbd;
``tests/fakes.py`` implements them in memory, so that :mod:`lifecycle`,
:mod:`chains` and :mod:`cleanup` have fast unit tests.  Every error raised
through them is a :class:`glance_rbd_tracked.errors.TrackedError`.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from typing import Protocol

from glance_rbd_tracked import core
from glance_rbd_tracked import delta
from glance_rbd_tracked import doctor
from glance_rbd_tracked import schema


class ImageReads(Protocol):
    def state(self, pool: str, name: str) -> core.ImageState:
        """Snapshots, their clones, the parent and our records; an image
        not in the pool's directory is looked for in its RBD trash;
        NotFound when there is no such image."""

    def trash(self, pool: str) -> list[tuple[str, str]]:
        """``(name, image id)`` of every image in the pool's RBD trash."""

    def writers(self, pool: str, image_id: str) -> tuple[str, ...]:
        """The clients that have the image open."""

    def by_id(self, pool: str, image_id: str) -> core.ImageState:
        """The image of that id, in the pool's directory or its trash."""

    def parent(self, pool: str, name: str) -> str | None:
        """``pool/image@snap`` of the image's parent, None if flat."""

    def list_images(self, pool: str) -> list[str]: ...


class ImageChanges(Protocol):
    def apply(self, state: core.ImageState, decision: core.Decision) -> None:
        """Carry out a Remove, Trim or Retire decided on ``state``; Conflict
        when the image changed since."""

    def set_records(self, pool: str, name: str, image_id: str,
                    records: Iterable[schema.Record]) -> None: ...

    def snapshot(self, pool: str, name: str, image_id: str,
                 snapshot: str) -> None: ...

    def clone(self, parent: str, pool: str, name: str) -> int:
        """Returns the clone format (1 or 2)."""

    def trash_snapshot(self, pool: str, name: str, image_id: str,
                       snapshot: str) -> None:
        """Move a snapshot its format-2 clones use to the trash
        namespace."""

    def seal(self, pool: str, name: str,
             record: schema.OwnerRecord) -> None: ...

    def copy(self, source: str, pool: str, name: str) -> None: ...

    def flatten(self, state: core.ImageState,
                on_progress: Callable[[int, int], None] | None = None
                ) -> None:
        """Copy the parent's data into the image read as ``state``, under
        the store's lease; Conflict if it was replaced meanwhile."""


class DataPath(Protocol):
    def size(self, pool: str, name: str, snapshot: str | None) -> int: ...

    def read(self, pool: str, name: str, snapshot: str | None, *,
             offset: int = 0, length: int | None = None,
             chunk_size: int = 8 << 20, depth: int = 2
             ) -> Iterator[bytes]: ...

    def read_sized(self, pool: str, name: str, snapshot: str | None, *,
                   offset: int = 0, length: int | None = None,
                   chunk_size: int = 8 << 20, depth: int = 2
                   ) -> tuple[int, Iterator[bytes]]:
        """The image's size and :meth:`read`'s chunks, from one open."""

    def write_new(self, pool: str, name: str, chunks: Iterable[bytes], *,
                  size: int, order: int, record: schema.OwnerRecord,
                  thin: bool = False, depth: int = 4,
                  on_chunk: Callable[[bytes], None] = ...) -> int: ...

    def write_clone(self, pool: str, name: str, parent: str,
                    pieces: Iterable[tuple[int, bytes]], *, size: int,
                    order: int, record: schema.OwnerRecord,
                    depth: int = 4) -> int:
        """Clone ``parent`` with objects of ``1 << order`` bytes, write
        whole objects over it, mark and snapshot it as
        :meth:`write_new` does."""


class DeltaReads(Protocol):
    """What a copy to another cluster reads in the cluster it copies
    from (:mod:`glance_rbd_tracked.copies`)."""

    def lineage(self, pool: str, name: str,
                snapshot: str) -> list[delta.Layer]:
        """The snapshot and every ancestor, nearest first."""

    def own_blocks(self, layer: delta.Layer) -> frozenset[int]:
        """The blocks the layer itself wrote (not its parent)."""

    def changed(self, source: delta.Layer, base: delta.Layer,
                blocks: Iterable[int], depth: int = 4) -> frozenset[int]:
        """Of ``blocks``, those where the two snapshots differ."""

    def objects(self, layer: delta.Layer, numbers: Iterable[int],
                order: int, depth: int = 4
                ) -> Iterator[tuple[int, bytes]]:
        """``(offset, data)`` of the objects ``numbers`` of ``1 << order``
        bytes."""


class Journal(Protocol):
    def entries(self, pool: str) -> dict[str, str]: ...

    def update(self, pool: str, put: dict[str, str] | None = None,
               remove: Iterable[str] = ()) -> None:
        """Set and remove entries in one atomic write."""


class ClusterSetup(Protocol):
    def facts(self, store_pool: str,
              chain_pools: tuple[str, ...]) -> doctor.Facts: ...

    def set_pool_option(self, pool: str, key: str, value: str) -> None: ...

    def pool_metadata(self, pool: str, key: str) -> str | None:
        """One key of the pool's RBD metadata; None when it is not set."""

    def pool_metadata_with(self, pool: str, prefix: str) -> dict[str, str]:
        """The keys of the pool's RBD metadata starting with ``prefix``."""

    def set_pool_metadata(self, pool: str, key: str, value: str) -> None:
        """Set one key of the pool's RBD metadata; Unfinished when it does
        not read back as set."""


class PoolSpace(Protocol):
    def of(self, pool: str) -> core.PoolSpace | None:
        """The pool's quota, what it stores, and what the cluster can
        still write into it; None while the mgr has not reported it."""


class Backend(Protocol):
    """One cluster: what :func:`glance_rbd_tracked.ceph.connect` returns."""

    @property
    def images(self) -> ImageReads: ...

    @property
    def changes(self) -> ImageChanges: ...

    @property
    def data(self) -> DataPath: ...

    @property
    def deltas(self) -> DeltaReads: ...

    @property
    def journal(self) -> Journal: ...

    @property
    def setup(self) -> ClusterSetup: ...

    @property
    def space(self) -> PoolSpace: ...

    def fsid(self) -> str: ...
