"""Nova (tested: 34.x): instance snapshots as chains, destroyed disks retired.

Nova has no plug point for its libvirt image backend (``images_type = rbd``
is ``imagebackend.Rbd`` in code), so :func:`main` is a launcher:
``glance-rbd-tracked-nova-compute`` runs Nova's own
``nova.cmd.compute.main`` and, right after nova-compute has read its
configuration and set up logging, :func:`install` wraps three methods
(each still runs Nova's own code where the store has nothing to add):

* ``imagebackend.Rbd.direct_snapshot``: a chain (nothing copied) instead of
  clone + flatten.  It returns the location Nova registers with Glance.  A
  disk the store may not touch (its pool is not a chain pool of the chain
  policy kept in Glance's pool) gets Nova's stock direct snapshot; a chain
  that fails is rolled back and ``ImageUnacceptable`` sends Nova to its
  standard snapshot.
* ``imagebackend.Rbd.cleanup_direct_snapshot``: Nova's clean-up after a
  failed registration removes a chain image through the store (stock would
  orphan the disk's chain snapshot); any other location stays stock.
* ``rbd_utils.RBDDriver.cleanup_volumes`` (instance destroy, unrescue):
  Nova's own loop, whose filter the integration extends: a disk that chain
  images depend on is retired instead of failing to be removed; every other
  disk goes to Nova's stock destroy.

:func:`install` checks the parameters (names and kinds) of everything it
wraps or calls, not Nova's version, so one release of the store serves every
Nova series that kept them; on anything else it changes nothing and logs one
line saying why and what that means for chains (:data:`DECLINED`).  A wrapped
method called with a parameter it does not know is Nova's, unchanged.  Only
the store's own errors send Nova to a fall-back; anything else is a bug and
propagates.  Importing this module imports neither Nova nor
eventlet: the launcher imports ``nova.cmd.compute`` first, whose first
statement puts Nova in its threading mode.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import logging
from typing import Any

from oslo_config import cfg

from glance_rbd_tracked import ceph
from glance_rbd_tracked import chains
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import locations
from glance_rbd_tracked import ports
from glance_rbd_tracked.integrations import common

LOG = logging.getLogger(__name__)

GROUP = "rbd_tracked"
SERVICE = "nova-compute"  # as it records the chain policy it runs with
OPTS = [
    cfg.BoolOpt("enabled", default=True,
                help="Under glance-rbd-tracked-nova-compute: make instance "
                     "snapshots as chains and retire destroyed disks. False: "
                     "nova-compute runs Nova's stock code."),
    cfg.ListOpt("chain_pools",
                help="Only with policy_override: the chain pools. Otherwise "
                     "the cluster's chain policy applies (doctor sets it "
                     "from glance-api's). A disk in another pool is "
                     "snapshotted by Nova's stock code."),
    cfg.BoolOpt("policy_override", default=False,
                help="Run with chain_pools set here instead of the chain "
                     "policy kept in the cluster (doctor reports it)."),
    cfg.IntOpt("op_timeout", default=30, min=1,
               help="Seconds any call of the store into Ceph may take "
                    "(connecting: [libvirt] rbd_connect_timeout)."),
]

IMAGEBACKEND = "nova.virt.libvirt.imagebackend"
RBD_UTILS = "nova.storage.rbd_utils"
DIRECT_SNAPSHOT = ("(self, context, snapshot_name, image_format, image_id, "
                   "base_image_id)")
CLEANUP_DIRECT_SNAPSHOT = ("(self, location, also_destroy_volume=False, "
                           "ignore_errors=False)")
CLEANUP_VOLUMES = "(self, filter_fn)"
KNOWN = common.Known("nova", ("34.",), {
    # wrapped
    f"{IMAGEBACKEND}:Rbd.direct_snapshot": DIRECT_SNAPSHOT,
    f"{IMAGEBACKEND}:Rbd.cleanup_direct_snapshot": CLEANUP_DIRECT_SNAPSHOT,
    f"{RBD_UTILS}:RBDDriver.cleanup_volumes": CLEANUP_VOLUMES,
    # called by the wrappers.  _get_parent_pool is private to Nova, and
    # kept: it is how Nova itself finds Glance's pool for a direct snapshot
    # (the disk's parent, else the base image's locations through Glance),
    # and nothing public says it.
    f"{IMAGEBACKEND}:Rbd._get_parent_pool":
        "(self, context, base_image_id, fsid)",
    f"{RBD_UTILS}:RBDDriver.remove_snap":
        "(self, volume, name, ignore_errors=False)",
})

#: What a nova-compute without the integration means for chains, said in
#: the one line the launcher logs when it declines (what stock Nova does
#: with chains: tests/e2e/openstack/test_stock.py).
DECLINED = (
    "nova-compute runs without chain snapshots ({why}): instance snapshots "
    "are copied, as stock Nova does; chain images made before stay valid "
    "and deletable, but a destroyed instance's disk one of them depends on "
    "is not retired: it stays in its pool for good (glance-rbd-tracked "
    "retire removes it) unless clone format 2 and the pool's "
    "rbd_move_parent_to_trash_on_remove let librbd trash it "
    "(glance-rbd-tracked doctor checks both)")


@dataclasses.dataclass(frozen=True)
class Outcome:
    installed: bool
    reason: str


_installed: Outcome | None = None


def install(conf: Any = None) -> Outcome:
    """Replace Nova's methods (once per process) unless Nova is not a
    release this module knows or ``[rbd_tracked] enabled`` is false.
    ``conf`` is Nova's ``CONF`` (default); logs one line either way."""
    global _installed
    if _installed is not None and _installed.installed:
        return _installed
    if conf is None:
        import nova.conf  # type: ignore[import-untyped]
        conf = nova.conf.CONF
    conf.register_opts(OPTS, group=GROUP)
    outcome = _install(conf)
    if outcome.installed:
        LOG.info("glance_rbd_tracked: %s", outcome.reason)
    else:
        LOG.warning("glance_rbd_tracked: %s",
                    DECLINED.format(why=outcome.reason))
    _installed = outcome
    return outcome


def _install(conf: Any) -> Outcome:
    if not conf[GROUP].enabled:
        return Outcome(False, f"[{GROUP}] enabled = false")
    refusal = common.check(KNOWN)
    if refusal is not None:
        return Outcome(False, refusal)
    from nova import version
    from nova.storage import rbd_utils  # type: ignore[import-untyped]
    from nova.virt.libvirt import imagebackend  # type: ignore[import-untyped]

    release = version.version_info.version_string()
    nova = Integration(conf)
    for owner, name, source, ours in (
            (imagebackend.Rbd, "direct_snapshot", DIRECT_SNAPSHOT,
             nova.direct_snapshot),
            (imagebackend.Rbd, "cleanup_direct_snapshot",
             CLEANUP_DIRECT_SNAPSHOT, nova.cleanup_direct_snapshot),
            (rbd_utils.RBDDriver, "cleanup_volumes", CLEANUP_VOLUMES,
             nova.cleanup_volumes)):
        setattr(owner, name, common.wrap(getattr(owner, name), source, ours))
    tested = "" if KNOWN.tested_on(release) else (
        f" (tested on {KNOWN.tested_text()}; this release has every method "
        "it wraps or calls, with the parameters it needs)")
    return Outcome(True, f"Nova {release}: instance snapshots are chains, "
                         f"destroyed disks with chains are retired{tested}")


class Integration:
    """The replacements; ``rbd`` is Nova's ``Rbd`` image or ``RBDDriver``."""

    def __init__(self, conf: Any) -> None:
        self.conf = conf
        group = conf[GROUP]
        self.policies = common.policies(
            SERVICE, f"[{GROUP}] policy_override", group.policy_override,
            group.chain_pools)

    def backend(self, driver: Any) -> ports.Backend:
        """The store's connection, with Nova's [libvirt] settings."""
        return ceph.shared(driver.ceph_conf or None, driver.rbd_user or None,
                           timeout=self.conf[GROUP].op_timeout,
                           connect_timeout=driver.rbd_connect_timeout)

    # -- imagebackend.Rbd ---------------------------------------------------

    def direct_snapshot(self, stock: Callable[..., str], rbd: Any,
                        context: Any, snapshot_name: str, image_format: str,
                        image_id: str, base_image_id: str) -> str:
        from nova import exception

        # Nova's ImageUnacceptable (from _get_parent_pool) is Nova's own
        # fall-back and passes through; anything not the store's is a bug
        try:
            backend = self.backend(rbd.driver)
            # Nova's own way to find Glance's pool: the disk's parent, or the
            # base image's location (ImageUnacceptable: Nova falls back)
            pool = rbd._get_parent_pool(context, base_image_id,
                                        backend.fsid())
            policy = self.policies.get(backend, pool)
            request = chains.Request(f"{rbd.driver.pool}/{rbd.rbd_name}",
                                     image_id)
            (made,) = chains.snapshot(backend, [request], policy,
                                      paths=(chains.Path.CHAIN,))
        except errors.NotOwned as exc:
            LOG.info("%s: the store does not make this chain (%s); Nova's "
                     "stock direct snapshot", image_id, exc)
            return stock(rbd, context, snapshot_name, image_format, image_id,
                         base_image_id)
        except errors.TrackedError as exc:
            # chains.snapshot rolled back whatever it had made
            LOG.warning("%s: no chain (%s); Nova falls back to its standard "
                        "snapshot", image_id, exc, exc_info=True)
            raise exception.ImageUnacceptable(
                image_id=image_id,
                reason=f"glance_rbd_tracked could not make a chain: {exc}"
            ) from exc
        LOG.info("snapshot of %s is the chain %s (%.2f s)", request.source,
                 made.location, made.seconds)
        return made.location

    def cleanup_direct_snapshot(self, stock: Callable[..., None], rbd: Any,
                                location: dict[str, str] | None,
                                also_destroy_volume: bool = False,
                                ignore_errors: bool = False) -> None:
        parsed = _location(location["url"]) if location else None
        if parsed is not None and parsed.pool is not None:
            pool, image = parsed.pool, parsed.image
            try:
                backend = self.backend(rbd.driver)
                owner = backend.images.state(pool, image).records.owner
            except errors.TrackedError:
                owner = None  # not ours to decide: stock
            if owner is not None:
                if also_destroy_volume:
                    self._delete_chain(backend, pool, image, ignore_errors)
                # its snapshot alone is never removed: it is the location
                return
        stock(rbd, location, also_destroy_volume=also_destroy_volume,
              ignore_errors=ignore_errors)

    def _delete_chain(self, backend: ports.Backend, pool: str, image: str,
                      ignore_errors: bool) -> None:
        try:
            policy = self.policies.get(backend, pool)
            decision = lifecycle.delete(backend, pool, image, policy)
            LOG.info("unregistered chain %s/%s: %s", pool, image,
                     type(decision).__name__)
        except errors.NotFound:
            pass
        except errors.TrackedError:
            if not ignore_errors:
                raise
            LOG.warning("could not remove %s/%s; glance-rbd-tracked cleanup "
                        "will", pool, image, exc_info=True)

    # -- rbd_utils.RBDDriver ------------------------------------------------

    def cleanup_volumes(self, stock: Callable[..., None], driver: Any,
                        filter_fn: Callable[[str], bool]) -> None:
        """Nova's own loop; of the disks its filter picks, those chains
        depend on are retired here and left out of Nova's destroy."""

        def destroy(volume: str) -> bool:
            return bool(filter_fn(volume)) and not self._retire(driver,
                                                                volume)

        stock(driver, destroy)

    def _retire(self, driver: Any, name: str) -> bool:
        """Retire a disk the store has chains of; False: Nova's stock code
        destroys it."""
        from nova.storage import rbd_utils

        pool = driver.pool
        try:
            backend = self.backend(driver)
            state = backend.images.state(pool, name)
            if not common.has_chains(state):
                return False
            if state.records.retired is not None and \
                    state.name != state.records.retired.original_name:
                LOG.info("%s/%s is retired already; the store removes it",
                         pool, name)
                return True
            glance = common.glance_pool(state)
            if glance is None:
                return False
            # Nova's own snapshot goes first, as in its stock destroy
            if any(s.name == rbd_utils.RESIZE_SNAPSHOT_NAME
                   for s in state.snaps):
                driver.remove_snap(name, rbd_utils.RESIZE_SNAPSHOT_NAME,
                                   ignore_errors=True)
            policy = self.policies.get(backend, glance)
            decision = lifecycle.retire(backend, pool, name, policy)
        except errors.TrackedError as exc:
            LOG.warning("%s/%s: not retired (%s); Nova's stock destroy",
                        pool, name, exc, exc_info=True)
            return False
        LOG.info("%s/%s: %s (%s)", pool, name, type(decision).__name__,
                 getattr(decision, "reason", ""))
        return True


def _location(url: str) -> locations.Location | None:
    """The parts of a location Nova registered, or None when it is not an
    rbd:// location glance_store reads (then it is left to Nova's code)."""
    try:
        return locations.parse(url)
    except errors.Invalid:
        return None


def main() -> None:
    """``glance-rbd-tracked-nova-compute``: nova-compute with the
    integration, same arguments as ``nova-compute``."""
    # first: Nova chooses its threading mode before anything imports eventlet
    from nova.cmd import compute  # type: ignore[import-untyped]
    from oslo_log import log as oslo_log

    stock_setup = oslo_log.setup

    def setup(*args: Any, **kwargs: Any) -> Any:
        # once: nova-compute has read its configuration; its log is ready
        oslo_log.setup = stock_setup
        result = stock_setup(*args, **kwargs)
        install(compute.CONF)
        return result

    oslo_log.setup = setup
    compute.main()


if __name__ == "__main__":
    main()
