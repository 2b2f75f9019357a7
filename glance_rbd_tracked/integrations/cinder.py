"""Cinder (tested: 29.x): images from volumes as chains, deleted volumes
retired.

Cinder loads the class ``volume_driver`` names, so no launcher is needed::

    [ceph]
    volume_driver = glance_rbd_tracked.integrations.cinder.TrackedRBDDriver

:class:`TrackedRBDDriver` is Cinder's ``RBDDriver`` with two methods
changed; everything else is Cinder's:

* ``copy_volume_to_image`` (``openstack image create --volume``) makes a
  chain from the volume and registers its location with Glance the way
  Cinder's image service does (``add_location``: the locations API as the
  ``[glance]`` service user).  Where a chain cannot be made, or Glance does
  not take the location while the image is still queued, the chain is
  removed and Cinder's stock upload streams the volume as before.
* ``delete_volume`` retires a volume that chain images depend on (after
  removing Cinder's own backup snapshots, as the stock delete does); every
  other volume is deleted by Cinder's stock code.

Where a method it overrides or calls lacks the parameters (names and kinds)
it was written against, the driver logs one line at start and is Cinder's
stock ``RBDDriver`` in everything; the release's number is not asked.  It
uses Cinder's public driver API, save the two private names in
:data:`PRIVATE` (no public API says them; a test fails if they go).  Only the
store's own errors, and Glance's refusal of a location, send an upload or a
delete to Cinder's stock code; anything else is a bug and propagates.
cinder-volume runs under eventlet: the store's blocking librados calls go
through ``eventlet.tpool`` there.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import logging
from typing import Any
from typing import TypeVar

from cinder import exception as cinder_exception  # type: ignore[import-untyped]
from cinder.volume.drivers import rbd as rbd_driver  # type: ignore[import-untyped]
from glanceclient import exc as glance_exc  # type: ignore[import-untyped]
from oslo_config import cfg

from glance_rbd_tracked import ceph
from glance_rbd_tracked import chains
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import ports
from glance_rbd_tracked.integrations import common

LOG = logging.getLogger(__name__)
T = TypeVar("T")

OPTS = [
    cfg.StrOpt("rbd_tracked_glance_pool", default="images",
               help="Glance's pool (glance-api's rbd_store_pool), in this "
                    "backend's cluster: where images of volumes are made."),
    cfg.ListOpt("rbd_tracked_chain_pools",
                help="Only with rbd_tracked_policy_override: the chain "
                     "pools. Otherwise the cluster's chain policy applies "
                     "(doctor sets it from glance-api's). A volume in another "
                     "pool is uploaded by Cinder's stock code."),
    cfg.BoolOpt("rbd_tracked_policy_override", default=False,
                help="Run with rbd_tracked_chain_pools set here instead of "
                     "the chain policy kept in the cluster (doctor reports "
                     "it)."),
    cfg.IntOpt("rbd_tracked_op_timeout", default=30, min=1,
               help="Seconds any call of the store into Ceph may take "
                    "(connecting: rados_connect_timeout when above 0)."),
]

DRIVER = "cinder.volume.drivers.rbd"
SERVICE = "cinder-volume"  # as it records the chain policy it runs with
#: Cinder's private names the driver uses, and why no public one does:
#: ``_active_backend_id``: which cluster the backend serves after a
#: replication failover (``failover_completed`` sets it; no public attribute
#: or method says it, and the store must not chain a primary's demoted copy);
#: ``_delete_backup_snaps``: the backup snapshots Cinder's stock delete
#: removes (cinder-backup's naming rule, which the store must not copy: they
#: are Cinder's).  tests/integrations/test_cinder.py fails if either goes.
PRIVATE = ("_active_backend_id", "_delete_backup_snaps")

KNOWN = common.Known("cinder", ("29.",), {
    # overridden
    f"{DRIVER}:RBDDriver.copy_volume_to_image":
        "(self, context, volume, image_service, image_meta)",
    f"{DRIVER}:RBDDriver.delete_volume": "(self, volume)",
    # called by the overrides (the first one private: see PRIVATE)
    f"{DRIVER}:RBDDriver._delete_backup_snaps": "(self, rbd_image)",
    f"{DRIVER}:RBDVolumeProxy.__init__": "(self, driver, name)",
    "cinder.image.glance:GlanceImageService.add_location":
        "(self, context, image_id, url, metadata)",
    "cinder.image.glance:GlanceImageService.show": "(self, context, image_id)",
})

#: What Cinder's image service raises when Glance refuses or cannot be
#: reached (it translates some of glanceclient's errors, not all).
GLANCE_REFUSED = (cinder_exception.CinderException,
                  glance_exc.ClientException, glance_exc.BaseException)


@functools.cache
def refusal() -> str | None:
    """Why the driver must be Cinder's stock one, or None."""
    return common.check(KNOWN)


def release() -> str:
    from cinder import version
    return str(version.version_info.version_string())


def _blocking(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a librados-bound call where it does not stall eventlet's hub."""
    from cinder import utils

    if utils.concurrency_mode_threading():
        return call(*args, **kwargs)
    from eventlet import tpool  # type: ignore[import-untyped]
    return tpool.execute(call, *args, **kwargs)


class TrackedRBDDriver(rbd_driver.RBDDriver):
    """Cinder's RBD driver; images of volumes are chains of the store."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(OPTS)
        c = self.configuration
        self._tracked_policies = common.policies(
            SERVICE, "rbd_tracked_policy_override",
            c.rbd_tracked_policy_override, c.rbd_tracked_chain_pools)
        self._tracked_refusal = refusal()
        if self._tracked_refusal is None:
            version = release()
            LOG.info("glance_rbd_tracked: images of volumes are chains, "
                     "deleted volumes with chains are retired%s",
                     "" if KNOWN.tested_on(version) else
                     f" (Cinder {version}, tested on {KNOWN.tested_text()}: "
                     "it has every method the driver overrides or calls, "
                     "with the parameters it needs)")
        else:
            LOG.warning("glance_rbd_tracked: the driver is Cinder's stock "
                        "RBDDriver: %s", self._tracked_refusal)

    # -- settings -----------------------------------------------------------

    def _tracked_backend(self) -> ports.Backend:
        c = self.configuration
        conffile = c.rbd_ceph_conf or None
        if conffile is None and c.rbd_cluster_name not in (None, "", "ceph"):
            conffile = f"/etc/ceph/{c.rbd_cluster_name}.conf"
        return ceph.shared(conffile, c.rbd_user or None,
                           timeout=c.rbd_tracked_op_timeout,
                           connect_timeout=c.rados_connect_timeout)

    def _tracked_policy(self, backend: ports.Backend,
                glance_pool: str | None = None) -> core.Policy:
        """The chain policy kept in Glance's pool (unless overridden)."""
        return self._tracked_policies.get(
            backend, glance_pool or self.configuration.rbd_tracked_glance_pool)

    def _tracked_stock_upload(self, volume: Any, image_meta: dict[str, Any]
                      ) -> str | None:
        """Why this upload stays Cinder's stock one, or None."""
        if self._tracked_refusal is not None:
            return self._tracked_refusal
        if image_meta.get("disk_format") != "raw" or \
                image_meta.get("container_format") == "compressed":
            return "the image is not raw: Cinder converts it"
        # private (PRIVATE): no public API says which cluster is active
        if self._active_backend_id not in (None, "", "default"):
            return "the backend has failed over to another cluster"
        specs = getattr(volume.volume_type, "extra_specs", None) or {}
        if specs.get("image_service:store_id"):
            return "the volume type names a Glance store"
        return None

    # -- copy_volume_to_image -----------------------------------------------

    def copy_volume_to_image(self, context: Any, volume: Any,
                             image_service: Any,
                             image_meta: dict[str, Any]) -> None:
        why = self._tracked_stock_upload(volume, image_meta)
        if why is not None:
            LOG.info("%s: stock upload (%s)", volume.name, why)
            return super().copy_volume_to_image(context, volume,
                                                image_service, image_meta)
        image_id = image_meta["id"]
        source = f"{self.configuration.rbd_pool}/{volume.name}"
        try:
            backend = self._tracked_backend()
            policy = _blocking(self._tracked_policy, backend)
            (made,) = _blocking(chains.snapshot, backend,
                                [chains.Request(source, image_id)], policy,
                                paths=(chains.Path.CHAIN,))
        except errors.TrackedError as exc:
            # a refusal changed nothing; a failure was rolled back
            LOG.warning("%s: no chain (%s); stock upload", source, exc)
            return super().copy_volume_to_image(context, volume,
                                                image_service, image_meta)
        try:
            image_service.add_location(context, image_id, made.location, {})
        except GLANCE_REFUSED as exc:
            if not self._tracked_still_queued(context, image_service,
                                              image_id):
                raise  # Glance may have taken it: the chain stays
            LOG.warning("%s: Glance did not take %s (%s); removing the chain, "
                        "stock upload (does the [glance] user have the "
                        "service role?)", source, made.location, exc)
            _blocking(lifecycle.delete, backend, policy.pool, image_id,
                      policy)
            return super().copy_volume_to_image(context, volume,
                                                image_service, image_meta)
        LOG.info("%s is image %s: chain %s (%.2f s)", source, image_id,
                 made.location, made.seconds)
        return None

    @staticmethod
    def _tracked_still_queued(context: Any, image_service: Any,
                      image_id: str) -> bool:
        try:
            return image_service.show(context, image_id).get(
                "status") == "queued"
        except GLANCE_REFUSED:
            return False  # unknown: the caller keeps the chain

    # -- delete_volume ------------------------------------------------------

    def delete_volume(self, volume: Any) -> None:
        if self._tracked_refusal is None and self._tracked_retire(volume):
            return None
        return super().delete_volume(volume)

    def _tracked_retire(self, volume: Any) -> bool:
        """Retire a volume the store has chains of; False: Cinder's stock
        delete."""
        pool, name = self.configuration.rbd_pool, volume.name
        try:
            backend = self._tracked_backend()
            state = _blocking(backend.images.state, pool, name)
        except errors.TrackedError:
            return False  # gone (stock says so) or unreadable: stock
        if not common.has_chains(state):
            return False
        if any(s.name.endswith(".clone_snap") for s in state.snaps):
            # Cinder's own clones: its stock rename to <name>.deleted
            return False
        try:
            with rbd_driver.RBDVolumeProxy(self, name) as image:
                # private (PRIVATE): the backup snapshots are Cinder's
                self._delete_backup_snaps(image)
            policy = _blocking(self._tracked_policy, backend,
                               common.glance_pool(state))
            decision = _blocking(lifecycle.retire, backend, pool, name,
                                 policy)
        except errors.TrackedError as exc:
            LOG.warning("%s/%s: not retired (%s); stock delete", pool, name,
                        exc, exc_info=True)
            return False
        LOG.info("%s/%s: %s (%s)", pool, name, type(decision).__name__,
                 getattr(decision, "reason", ""))
        return True
