"""Image and snapshot specs: ``pool[/namespace]/image[@snapshot]``.

Rules this module owns:

* An image spec is ``pool/image`` or ``pool/namespace/image``, as ``rbd``
  writes them; a snapshot spec is an image spec, ``@``, and the snapshot.
  :meth:`ImageSpec.parse` and :meth:`SnapSpec.parse` are the project's only
  readers of such strings, ``str()`` their only writer: the records keep
  the strings (an on-disk format), the code handles these values.
* The image is what follows the last ``/`` (before the last ``@``); what
  precedes it is the pool spec, ``pool`` or ``pool/namespace``: the
  adapter opens pools by that string, and the policy names pools by it.
* A part that is empty is Invalid, except a snapshot spec's snapshot: an
  empty one (``pool/image@``) names the image, not a snapshot of it (a
  release that goes on to an image whose snapshot it does not know).

Pure: no I/O.
"""

from __future__ import annotations

import dataclasses

from glance_rbd_tracked import errors


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """An image: ``pool/name``, or ``pool/namespace/name``."""

    pool: str
    name: str
    namespace: str = ""

    def __post_init__(self) -> None:
        if not self.pool or not self.name or "/" in self.pool \
                or "/" in self.name or self.namespace.startswith("/") \
                or self.namespace.endswith("/"):
            raise errors.Invalid(f"{self.pool!r}, {self.namespace!r}, "
                                 f"{self.name!r} is not an image spec")

    @classmethod
    def parse(cls, text: str, default_pool: str | None = None) -> ImageSpec:
        """The spec ``text`` names; with ``default_pool``, a bare ``image``
        is in that pool.  Invalid unless it has the form."""
        pool_spec, slash, name = text.rpartition("/")
        if not slash and default_pool is not None:
            pool_spec = default_pool
        pool, _, namespace = pool_spec.partition("/")
        if not pool or not name or (pool_spec.endswith("/")
                                    or "//" in pool_spec):
            raise errors.Invalid(f"{text!r} is not of the form pool/image")
        return cls(pool, name, namespace)

    @classmethod
    def in_pool(cls, pool_spec: str, name: str) -> ImageSpec:
        """The image ``name`` in ``pool_spec`` (``pool`` or
        ``pool/namespace``, as :attr:`pool_spec` gives it)."""
        return cls.parse(f"{pool_spec}/{name}") if "/" not in name \
            else cls(pool_spec, name)  # Invalid: a name holds no "/"

    @property
    def pool_spec(self) -> str:
        """``pool`` or ``pool/namespace``: the pool as the adapter opens
        it and the policy names it."""
        return f"{self.pool}/{self.namespace}" if self.namespace else self.pool

    @property
    def parts(self) -> tuple[str, str]:
        """``(pool_spec, name)``: the image as the adapter's calls take
        it."""
        return self.pool_spec, self.name

    def at(self, snapshot: str) -> SnapSpec:
        """Its snapshot ``snapshot``."""
        return SnapSpec(self, snapshot)

    def renamed(self, name: str) -> ImageSpec:
        """The image ``name`` in the same pool (and namespace)."""
        return dataclasses.replace(self, name=name)

    def __str__(self) -> str:
        return f"{self.pool_spec}/{self.name}"


@dataclasses.dataclass(frozen=True)
class SnapSpec:
    """A snapshot of an image: ``pool[/namespace]/image@snapshot``."""

    image: ImageSpec
    snapshot: str

    @classmethod
    def parse(cls, text: str) -> SnapSpec:
        """The spec ``text`` names; Invalid unless it has the form."""
        image, at, snapshot = text.rpartition("@")
        if not at:
            raise errors.Invalid(f"{text!r} is not of the form "
                                 "pool/image@snapshot")
        try:
            return cls(ImageSpec.parse(image), snapshot)
        except errors.Invalid:
            raise errors.Invalid(f"{text!r} is not of the form "
                                 "pool/image@snapshot") from None

    @property
    def pool_spec(self) -> str:
        return self.image.pool_spec

    @property
    def name(self) -> str:
        """The image's name."""
        return self.image.name

    @property
    def parts(self) -> tuple[str, str, str]:
        """``(pool_spec, name, snapshot)``: the snapshot as the adapter's
        calls take it."""
        return self.pool_spec, self.name, self.snapshot

    def __str__(self) -> str:
        return f"{self.image}@{self.snapshot}"


def in_cluster(fsid: str, spec: ImageSpec) -> str:
    """``fsid:pool/image``: an image of another cluster, as a chain's
    intent names its source there, so that nothing ever mistakes it for a
    same-named image of the store's cluster."""
    return f"{fsid}:{spec}"


def cluster_of(text: str) -> tuple[str | None, str]:
    """``(fsid, spec)`` of what :func:`in_cluster` wrote; ``(None, text)``
    for a spec of the store's own cluster."""
    fsid, colon, spec = text.rpartition(":")
    return (fsid if colon else None), spec
