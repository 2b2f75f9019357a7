"""The project's errors.

The adapter (:mod:`glance_rbd_tracked.ceph.connection`) turns librados and
librbd errors into these; the glance driver turns these into glance_store
exceptions; the CLI turns them into exit codes. Each carries one sentence
for the user.
"""


class TrackedError(Exception):
    """Base class: ``str(err)`` is a sentence fit for an operator."""


class NotFound(TrackedError):
    """The image or snapshot does not exist."""


class AlreadyExists(TrackedError):
    """An image of that name exists already."""


class InUse(TrackedError):
    """The cluster refused because something still uses the image."""


class Invalid(TrackedError):
    """A name or location that is not of the form it must have."""


class NotOwned(TrackedError):
    """The store refuses to touch an image it does not own."""


class SizeMismatch(TrackedError):
    """The data stream was longer or shorter than announced."""


class NoSpace(TrackedError):
    """The cluster or the pool is full."""


class CorruptMetadata(TrackedError):
    """A metadata record of ours could not be read."""


class Conflict(TrackedError):
    """The cluster changed under a destructive step; the caller may retry."""


class Busy(Conflict):
    """Another worker held the store's lease on the image for the whole
    wait: trying again at once would only wait again."""


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` says the cluster did not answer in time."""
    return isinstance(exc, ClusterError) and exc.timed_out


class Unfinished(TrackedError):
    """A step ran, yet a re-read of the cluster does not show it done."""


class ClusterError(TrackedError):
    """The cluster could not be reached or answered with an error;
    ``timed_out``: it did not answer in time (a write may still land)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class ConfigError(TrackedError):
    """The configuration does not say what is needed, or says it wrongly."""
