"""nova-compute's RBD code (PyPI nova 34), driven by a test (see worker.py).

    python -m tests.e2e.openstack.nova_side '{"ceph_conf": ..., ...}'

Real: Nova's ``imagebackend.Rbd`` (clone = boot, direct_snapshot,
cleanup_direct_snapshot), ``rbd_utils.RBDDriver``,
``LibvirtDriver._cleanup_rbd`` and ``_create_snapshot_metadata`` (both use
nothing of the driver, so they are called unbound), Nova's Glance client
(``nova.image.glance.API``) against the real glance-api, librbd.  Plain
data only: an unsaved ``objects.Instance`` and a ``RequestContext`` whose
auth plugin carries the roles keystone would (``grt_loopback_identity``).
Nothing needs libvirt, a database or a message bus.

``mode``: ``stock`` (Nova as it is), ``integration`` (install() as the
launcher does), ``renamed-parameter`` (Nova's direct_snapshot calls its
``image_id`` ``image_uuid``, then install()), ``extended-signature`` (it
takes a later release's ``share=False`` too, then install()),
``unknown-version`` (Nova says 35.0.0, then install()).  ``bug``:
``{"target": "module:function", "error": "RuntimeError"}`` makes that
function of the store raise (a builtin or a ``glance_rbd_tracked.errors``
class), to show which errors the integration falls back on.
"""

# what nova/cmd/compute.py does first: Nova 34's compute runs on threads
from nova import monkey_patch  # isort: skip

monkey_patch.patch(backend="threading")

import logging  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402
import uuid  # noqa: E402

from grt_loopback_identity import TOKEN  # noqa: E402
from grt_loopback_identity import LoopbackIdentity  # noqa: E402
from nova import context as nova_context  # noqa: E402
from nova import exception  # noqa: E402
from nova import objects  # noqa: E402
from nova import version  # noqa: E402
import nova.conf  # noqa: E402
from nova.image import glance as nova_glance  # noqa: E402
from nova.storage import rbd_utils  # noqa: E402
from nova.virt.libvirt import driver as libvirt_driver  # noqa: E402
from nova.virt.libvirt import imagebackend  # noqa: E402

from glance_rbd_tracked.integrations import nova as integration  # noqa: E402
from tests.e2e.openstack import worker  # noqa: E402

CONF = nova.conf.CONF
LOG = logging.getLogger("nova_side")


def configure(config: dict[str, Any]) -> None:
    os.makedirs(os.path.join(config["state_dir"], "instances"), exist_ok=True)
    CONF([], project="nova", default_config_files=[], default_config_dirs=[])
    ceph_conf = worker.client_ceph_conf(config, config.get("keyring"))
    for name, value in (("images_type", "rbd"), ("images_rbd_pool", "vms"),
                        ("images_rbd_ceph_conf", ceph_conf),
                        ("rbd_user", config.get("rbd_user")),
                        ("rbd_connect_timeout", 30),
                        ("rbd_destroy_volume_retries", 1),
                        ("rbd_destroy_volume_retry_interval", 0)):
        CONF.set_override(name, value, group="libvirt")
    CONF.set_override("instances_path",
                      os.path.join(config["state_dir"], "instances"))
    CONF.set_override("api_servers", [config["glance_url"]], group="glance")
    CONF.set_override("lock_path", config["state_dir"],
                      group="oslo_concurrency")


def setup(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    logging.basicConfig(force=True, level=logging.INFO, format="%(levelname)s "
                        "%(name)s: %(message)s")
    configure(config)
    objects.register_all()
    lines = worker.Lines()
    logging.getLogger(integration.__name__).addHandler(lines)
    mode = config["mode"]
    stock = imagebackend.Rbd.direct_snapshot
    if mode == "renamed-parameter":
        # as another Nova release might have it (no annotations, as Nova)
        def direct_snapshot(self, context, snapshot_name, image_format,
                            image_uuid, base_image_id):
            return stock(self, context, snapshot_name, image_format,
                         image_uuid, base_image_id)

        imagebackend.Rbd.direct_snapshot = direct_snapshot
    if mode == "extended-signature":
        def direct_snapshot(self, context, snapshot_name, image_format,
                            image_id, base_image_id, share=False):
            LOG.info("Nova's direct_snapshot, share=%s", share)
            return stock(self, context, snapshot_name, image_format,
                         image_id, base_image_id)

        imagebackend.Rbd.direct_snapshot = direct_snapshot
    if config.get("bug"):
        worker.inject(**config["bug"])
    if mode == "unknown-version":
        version.version_info.version_string = lambda: "35.0.0"
    before = {name: getattr(cls, name) for cls, name in replaced()}
    outcome = None
    if mode != "stock":
        CONF.register_opts(integration.OPTS, group=integration.GROUP)
        if "chain_pools" in config:
            CONF.set_override("chain_pools", config["chain_pools"],
                              group=integration.GROUP)
            CONF.set_override("policy_override", True,
                              group=integration.GROUP)
        outcome = integration.install(CONF)
    side = NovaSide(config)
    hello = {
        "nova": version.version_info.version_string(),
        "installed": outcome.installed if outcome else False,
        "reason": outcome.reason if outcome else "",
        "lines": lines.lines,
        "changed": sorted(name for cls, name in replaced()
                          if getattr(cls, name) is not before[name]),
        # what each changed method wraps: Nova's own, the one it replaced
        "wrapping": sorted(name for cls, name in replaced()
                           if getattr(getattr(cls, name), "__wrapped__",
                                      None) is before[name]),
    }
    return hello, {name: getattr(side, name) for name in NovaSide.OPS}


def replaced() -> list[tuple[type, str]]:
    return [(imagebackend.Rbd, "direct_snapshot"),
            (imagebackend.Rbd, "cleanup_direct_snapshot"),
            (rbd_utils.RBDDriver, "cleanup_volumes")]


class NovaSide:
    OPS = ("boot", "snapshot", "direct_snapshot", "destroy",
           "cleanup_direct_snapshot", "is_cloneable", "clone_location")

    def __init__(self, config: dict[str, Any]) -> None:
        roles = "member,reader"
        self.context = nova_context.RequestContext(
            user_id="nova-side", project_id=worker.PROJECT,
            roles=roles.split(","),
            auth_token=TOKEN,
            user_auth_plugin=LoopbackIdentity(
                roles=roles,
                service_roles="service" if config.get("service_role", True)
                else ""))
        self.images = nova_glance.API()

    def instance(self, uuid_: str, **fields: Any) -> Any:
        return objects.Instance(uuid=uuid_, project_id=worker.PROJECT,
                                kernel_id="", ramdisk_id="", os_type=None,
                                **fields)

    def root(self, instance: Any) -> Any:
        """The root disk as LibvirtDriver.snapshot() finds it."""
        backend = imagebackend.Backend(CONF.use_cow_images)
        return backend.by_libvirt_path(
            instance, f"{CONF.libvirt.images_rbd_pool}/{instance.uuid}_disk",
            image_type="rbd")

    def boot(self, instance: str, image_id: str) -> str:
        """Imagebackend's Rbd.clone: the image's location from Glance,
        is_cloneable, then RBDDriver.clone (what spawning an instance
        does for its root disk)."""
        disk = imagebackend.Rbd(instance=self.instance(instance),
                                disk_name="disk")
        disk.clone(self.context, image_id)
        return f"{disk.driver.pool}/{disk.rbd_name}"

    def snapshot(self, instance: str, image_id: str,
                 base_image_id: str) -> dict[str, Any]:
        """LibvirtDriver.snapshot() from its direct snapshot on
        (driver.py 3329-3393 and 3450-3467), without the guest: the
        location goes to Glance through Nova's image API; on Nova's
        fallback exceptions, Nova's clean-up, then what Nova does next is
        reported (the standard snapshot streams the disk)."""
        inst = self.instance(instance, image_ref=base_image_id)
        image_meta = objects.ImageMeta.from_dict(
            {"container_format": "bare", "disk_format": "raw"})
        metadata = libvirt_driver.LibvirtDriver._create_snapshot_metadata(
            None, image_meta, inst, "raw", "snapshot")
        snapshot_name = uuid.uuid4().hex
        root = self.root(inst)
        began = time.monotonic()
        try:
            metadata["location"] = root.direct_snapshot(
                self.context, snapshot_name, "raw", image_id, base_image_id)
            self.images.update(self.context, image_id, metadata,
                               purge_props=False)
        except (NotImplementedError, exception.ImageUnacceptable,
                exception.Forbidden) as exc:
            failed = self._cleanup(root, metadata)
            return {"direct": False, "fallback": type(exc).__name__,
                    "reason": str(exc), "cleaned": failed}
        except Exception as exc:
            failed = self._cleanup(root, metadata)
            return {"direct": False, "failed": type(exc).__name__,
                    "reason": str(exc), "cleaned": failed}
        return {"direct": True, "location": metadata["location"],
                "seconds": time.monotonic() - began}

    @staticmethod
    def _cleanup(root: Any, metadata: dict[str, Any]) -> str | None:
        failed_snap = metadata.pop("location", None)
        if failed_snap:
            failed_snap = {"url": str(failed_snap)}
        root.cleanup_direct_snapshot(failed_snap, also_destroy_volume=True,
                                     ignore_errors=True)
        return failed_snap["url"] if failed_snap else None

    def direct_snapshot(self, instance: str, image_id: str,
                        base_image_id: str, **extra: Any) -> dict[str, Any]:
        """Rbd.direct_snapshot alone, timed (the benchmark); ``extra``:
        further keyword arguments, as a later Nova might pass."""
        root = self.root(self.instance(instance, image_ref=base_image_id))
        began = time.perf_counter()
        location = root.direct_snapshot(self.context, uuid.uuid4().hex,
                                        "raw", image_id, base_image_id,
                                        **extra)
        return {"location": location,
                "seconds": time.perf_counter() - began}

    def destroy(self, instance: str, task_state: str | None = None) -> None:
        """LibvirtDriver._cleanup_rbd: the disks of a deleted instance."""
        libvirt_driver.LibvirtDriver._cleanup_rbd(
            None, self.instance(instance, task_state=task_state))

    def cleanup_direct_snapshot(self, instance: str, url: str,
                                also_destroy_volume: bool) -> None:
        root = self.root(self.instance(instance))
        root.cleanup_direct_snapshot({"url": url},
                                     also_destroy_volume=also_destroy_volume,
                                     ignore_errors=True)

    def is_cloneable(self, url: str) -> bool:
        return bool(rbd_utils.RBDDriver().is_cloneable(
            {"url": url}, {"disk_format": "raw"}))

    def clone_location(self, instance: str, url: str) -> dict[str, Any]:
        """RBDDriver alone on one location, as Rbd.clone uses it:
        parse_url, is_cloneable, then clone into the instance's root disk
        (only when cloneable)."""
        driver = rbd_utils.RBDDriver()
        location = {"url": url}
        cloneable = bool(driver.is_cloneable(location, {"disk_format": "raw"}))
        disk = f"{instance}_disk"
        if cloneable:
            driver.clone(location, disk)
        return {"parsed": driver.parse_url(url), "cloneable": cloneable,
                "disk": f"{driver.pool}/{disk}"}


if __name__ == "__main__":
    worker.serve(setup)
