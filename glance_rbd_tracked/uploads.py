"""Uploads through Glance, journalled so that nothing a failed one leaves
behind stays in the way.

An upload is journalled (``intent/upload/<pool>/<image>``) before its image
is created, and the entry goes once the image is complete, or once it is
gone again after a failure.  When the cluster did not answer, the partial
image stays (removing it would wait as long again) and so does the entry:
``cleanup`` removes the image once its writer is gone.  A new upload of the
same Glance image over such a partial image of the store's own replaces it
instead of answering Duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
import logging

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import ports
from glance_rbd_tracked import schema
from glance_rbd_tracked import specs

LOG = logging.getLogger(__name__)


def upload(ceph: ports.Backend, policy: core.Policy, name: str,
           chunks: Iterable[bytes], *, size: int, order: int,
           thin: bool = False, depth: int = 4,
           on_chunk: Callable[[bytes], None] = lambda chunk: None,
           now: lifecycle.Clock = lifecycle.utcnow,
           backoff: lifecycle.Backoff = lifecycle.BACKOFF) -> int:
    """Write Glance image ``name`` into the store's pool; returns the
    number of bytes written.  An announced ``size`` that does not fit in
    the pool's quota or free space is refused (NoSpace) before anything is
    written."""
    pool = policy.pool
    if core.space_matters(size, thin):
        refusal = core.check_space(size, ceph.space.of(pool), thin)
        if refusal is not None:
            raise errors.NoSpace(refusal.reason)

    def write() -> int:
        return ceph.data.write_new(
            pool, name, chunks, size=size, order=order, thin=thin,
            depth=depth, on_chunk=on_chunk,
            record=core.owner_record(schema.Kind.UPLOAD, now()))

    return journalled(ceph, pool, name, write, now=now, backoff=backoff)


def journalled(ceph: ports.Backend, pool: str, name: str,
               write: Callable[[], int], *,
               now: lifecycle.Clock = lifecycle.utcnow,
               backoff: lifecycle.Backoff = lifecycle.BACKOFF) -> int:
    """Run ``write``, which makes ``pool/name``, under an upload intent;
    returns what it returns."""
    # An image of that name first: only a partial upload of the store's,
    # abandoned, is replaced; anything else is a duplicate, and then this
    # call journals and changes nothing.
    try:
        existing = ceph.images.state(pool, name)
    except errors.NotFound:
        existing = None
    if core.takes_upload_name(existing):
        replace_partial(ceph, pool, name, backoff)
    intent = schema.Intent(op=schema.Op.UPLOAD, target=f"{pool}/{name}",
                           source="", snapshot=core.STOCK_SNAPSHOT,
                           started=schema.timestamp(now()))
    ceph.journal.update(pool, put={intent.key: schema.to_json(intent)})
    try:
        written = write()
    except errors.AlreadyExists:
        # made meanwhile by somebody else: nothing of this call's to clean
        ceph.journal.update(pool, remove=[intent.key])
        raise
    except BaseException as exc:
        if not errors.timed_out(exc):  # else: asking would wait again
            _drop_intent_if_gone(ceph, pool, name, intent)
        raise
    ceph.journal.update(pool, remove=[intent.key])
    return written


def _drop_intent_if_gone(ceph: ports.Backend, pool: str, name: str,
                   intent: schema.Intent) -> None:
    """After a failed upload: drop the intent if a re-read shows its
    image gone; otherwise it stays for cleanup.  Never raises."""
    try:
        ceph.images.state(pool, name)
        LOG.warning("the partial image %s/%s stays for cleanup", pool, name)
    except errors.NotFound:
        try:
            ceph.journal.update(pool, remove=[intent.key])
        except errors.TrackedError as exc:
            LOG.warning("the journal keeps %s: %s", intent.key, exc)
    except errors.TrackedError as exc:
        LOG.warning("the partial image %s/%s stays for cleanup: %s", pool,
                    name, exc)


def replace_partial(ceph: ports.Backend, pool: str, name: str,
                    backoff: lifecycle.Backoff = lifecycle.BACKOFF) -> None:
    """Remove ``pool/name`` if it is a partial upload of the store's whose
    writer is gone; otherwise raise AlreadyExists, saying why."""
    try:
        decision, _ = lifecycle.settle(
            ceph, pool, name, lambda state: core.decide_partial(
                state, ceph.images.writers(pool, state.image_id)), backoff)
    except errors.NotOwned as exc:
        raise errors.AlreadyExists(str(exc)) from None
    except errors.NotFound:
        return  # gone meanwhile
    if not isinstance(decision, core.Remove):
        raise errors.AlreadyExists(f"{pool}/{name} exists: "
                                   f"{getattr(decision, 'reason', '')}")
    LOG.info("removed the partial upload %s/%s", pool, name)


def finish(ceph: ports.Backend, intent: schema.Intent, policy: core.Policy,
           backoff: lifecycle.Backoff = lifecycle.BACKOFF) -> None:
    """Cleanup of an upload that did not finish: remove its partial image
    once its writer is gone, then drop the intent."""
    pool, name = specs.ImageSpec.parse(intent.target).parts
    writers: tuple[str, ...] = ()

    def decide(state: core.ImageState) -> core.Decision:
        nonlocal writers
        writers = ceph.images.writers(pool, state.image_id)
        return core.decide_partial(state, writers)

    try:
        decision, _ = lifecycle.settle(ceph, pool, name, decide, backoff)
    except errors.NotFound:
        decision = core.Keep("gone")
    if not core.upload_intent_done(decision, writers):
        raise errors.Unfinished(getattr(decision, "reason", ""))
    ceph.journal.update(policy.pool, remove=[intent.key])
