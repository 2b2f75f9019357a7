"""cinder-volume's RBD driver (PyPI cinder 29), driven by a test (see
worker.py).

    python -m tests.e2e.openstack.cinder_side '{"ceph_conf": ..., ...}'

Real: a cinder.conf read by Cinder's CONF, the class ``volume_driver``
names loaded as cinder-volume's manager loads it
(``importutils.import_object`` with its keyword arguments), ``do_setup``,
``check_for_setup_error``, ``create_volume``, ``copy_volume_to_image`` with
Cinder's own Glance image service against the real glance-api (the
``[glance]`` service user for ``add_location``), ``delete_volume``, os-brick,
librbd; eventlet monkey patching as cinder-volume does.  Plain data only:
unsaved ``objects.Volume``/``VolumeType`` and a ``RequestContext`` whose
auth plugin carries the roles keystone would (``grt_loopback_identity``).

``mode``: ``stock`` (Cinder's RBDDriver), ``integration``
(``TrackedRBDDriver``), ``changed-signature`` (Cinder's
``_delete_backup_snaps`` calls its parameter ``image``; TrackedRBDDriver),
``unknown-version`` (Cinder says 30.0.0; TrackedRBDDriver).  ``bug``: as
in nova_side, a function of the store that raises.
"""

# what cinder/cmd/volume.py does first: cinder-volume 29 runs on eventlet
import warnings  # isort: skip

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
from cinder import monkey_patch  # noqa: E402  # isort: skip

monkey_patch.patch()

import logging  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402
import uuid  # noqa: E402

from cinder import context as cinder_context  # noqa: E402
from cinder import objects  # noqa: E402
from cinder import version  # noqa: E402
from cinder.volume import configuration  # noqa: E402
from cinder.volume import driver as base_driver  # noqa: E402
from cinder.volume.drivers import rbd as rbd_driver  # noqa: E402
from grt_loopback_identity import TOKEN  # noqa: E402
from grt_loopback_identity import LoopbackIdentity  # noqa: E402
from oslo_config import cfg  # noqa: E402
from oslo_utils import importutils  # noqa: E402

from tests.e2e.openstack import worker  # noqa: E402

CONF = cfg.CONF
BACKEND = "ceph"
STOCK = "cinder.volume.drivers.rbd.RBDDriver"
TRACKED = "glance_rbd_tracked.integrations.cinder.TrackedRBDDriver"


def keyring(config: dict[str, Any]) -> str | None:
    """One keyring file with every key the config names (os-brick reads
    one file)."""
    if not config.get("keyring"):
        return None
    path = os.path.join(config["state_dir"], "keyring")
    with open(path, "w") as out:
        for part in config["keyring"].split(","):
            with open(part) as key:
                out.write(key.read() + "\n")
    return path


def cinder_conf(config: dict[str, Any]) -> str:
    state = config["state_dir"]
    client = worker.client_ceph_conf(
        config, keyring(config) if config.get("keyring") else None)
    driver = STOCK if config["mode"] == "stock" else TRACKED
    path = os.path.join(state, "cinder.conf")
    with open(path, "w") as conf:
        conf.write(f"""[DEFAULT]
glance_api_servers = {config["glance_url"]}
enabled_backends = {BACKEND}
state_path = {state}
image_conversion_dir = {state}/conversion

[oslo_concurrency]
lock_path = {state}

[glance]
# the service user cinder uses for add_location (here: keystone's headers)
auth_type = grt-loopback
roles = member,reader
service_roles = {"service" if config.get("service_role", True) else ""}

[{BACKEND}]
volume_driver = {driver}
volume_backend_name = {BACKEND}
rbd_pool = volumes
rbd_ceph_conf = {client}
# (Cinder's default rados_connect_timeout, -1: the store bounds its calls
# with rbd_tracked_op_timeout all the same)
rados_connection_retries = 2
rados_connection_interval = 0
""")
        if config.get("rbd_user"):
            conf.write(f"rbd_user = {config['rbd_user']}\n")
        if "chain_pools" in config:
            conf.write("rbd_tracked_chain_pools = "
                       f"{','.join(config['chain_pools'])}\n")
            conf.write("rbd_tracked_policy_override = true\n")
    return path


def setup(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    logging.basicConfig(force=True, level=logging.INFO, format="%(levelname)s "
                        "%(name)s: %(message)s")
    os.makedirs(os.path.join(config["state_dir"], "conversion"),
                exist_ok=True)
    # os-brick leaves a brickrbd_* file per stock upload in the temp dir
    tempfile.tempdir = config["state_dir"]
    CONF(["--config-file", cinder_conf(config)], project="cinder",
         default_config_files=[], default_config_dirs=[])
    objects.register_all()
    lines = worker.Lines()
    logging.getLogger("glance_rbd_tracked.integrations").addHandler(lines)
    if config["mode"] == "changed-signature":
        stock = rbd_driver.RBDDriver._delete_backup_snaps

        # as another Cinder release might have it
        def _delete_backup_snaps(self, image):
            stock(self, image)

        rbd_driver.RBDDriver._delete_backup_snaps = _delete_backup_snaps
    if config["mode"] == "unknown-version":
        version.version_info.version_string = lambda: "30.0.0"
    if config.get("bug"):
        worker.inject(**config["bug"])
    # as cinder/volume/manager.py builds its driver
    conf = configuration.Configuration(base_driver.volume_opts,
                                       config_group=BACKEND)
    if config.get("keyring"):
        # os-brick (the stock upload) looks for the key in
        # /etc/ceph/ceph.client.<user>.keyring; cinderlib's way to name a
        # file instead (cinder/volume/drivers/rbd.py _set_keyring_attributes)
        conf.rbd_keyring_conf = keyring(config)
    driver = importutils.import_object(
        STOCK if config["mode"] == "stock" else TRACKED, configuration=conf,
        host=f"cinder-side@{BACKEND}", cluster_name=None,
        is_vol_db_empty=False, active_backend_id=None)
    from glance_rbd_tracked.integrations import cinder as tracked

    side = CinderSide(driver)
    driver.do_setup(side.context)
    driver.check_for_setup_error()
    hello = {"cinder": version.version_info.version_string(),
             "driver": type(driver).__name__,
             "refusal": getattr(driver, "_tracked_refusal", None),
             # Cinder's private names the driver uses: still there?
             "private": {name: hasattr(driver, name)
                         for name in tracked.PRIVATE},
             "lines": lines.lines}
    return hello, {name: getattr(side, name) for name in CinderSide.OPS}


class CinderSide:
    OPS = ("create_volume", "copy_volume_to_image", "delete_volume",
           "clone_image")

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.context = cinder_context.RequestContext(
            user_id="cinder-side", project_id=worker.PROJECT, is_admin=True,
            roles=["admin", "member", "reader"], auth_token=TOKEN,
            user_auth_plugin=LoopbackIdentity(roles="admin,member,reader"))
        self.volume_type = objects.VolumeType(
            self.context, id=str(uuid.uuid4()), name=BACKEND, extra_specs={},
            qos_specs_id=None)
        self.volumes: dict[str, Any] = {}

    def create_volume(self, size_gib: int = 1) -> dict[str, str]:
        volume = objects.Volume(
            self.context, id=str(uuid.uuid4()), _name_id=None, size=size_gib,
            encryption_key_id=None, volume_type=self.volume_type,
            volume_type_id=self.volume_type.id, glance_metadata={},
            use_quota=True, host=f"cinder-side@{BACKEND}#{BACKEND}")
        self.driver.create_volume(volume)
        self.volumes[volume.id] = volume
        return {"id": volume.id, "name": volume.name}

    def copy_volume_to_image(self, volume_id: str,
                             image_id: str) -> dict[str, Any]:
        """The driver's part of the manager's copy_volume_to_image, with
        the image service the manager hands it."""
        # (importing it before the volume drivers is a circular import)
        from cinder.image import glance

        image_service, _ = glance.get_remote_image_service(self.context,
                                                           image_id)
        meta = {"id": image_id, "disk_format": "raw",
                "container_format": "bare", "name": "volume upload"}
        began = time.perf_counter()
        self.driver.copy_volume_to_image(self.context,
                                         self.volumes[volume_id],
                                         image_service, meta)
        return {"seconds": time.perf_counter() - began}

    def delete_volume(self, volume_id: str) -> None:
        self.driver.delete_volume(self.volumes[volume_id])

    def clone_image(self, image_id: str, size_gib: int = 1) -> dict[str, Any]:
        """A volume from an image, as the manager's create-volume flow
        asks the driver first: the image's locations and metadata through
        Cinder's image service, then the driver's clone_image."""
        from cinder.image import glance

        image_service, image_id = glance.get_remote_image_service(
            self.context, image_id)
        location = image_service.get_location(self.context, image_id)
        meta = image_service.show(self.context, image_id)
        volume = objects.Volume(
            self.context, id=str(uuid.uuid4()), _name_id=None, size=size_gib,
            encryption_key_id=None, volume_type=self.volume_type,
            volume_type_id=self.volume_type.id, glance_metadata={},
            use_quota=True, host=f"cinder-side@{BACKEND}#{BACKEND}")
        _update, cloned = self.driver.clone_image(
            self.context, volume, location, meta, image_service)
        if cloned:
            self.volumes[volume.id] = volume
        direct_url, locations = location
        return {"id": volume.id, "name": volume.name, "cloned": cloned,
                "locations": [loc["url"] for loc in locations or ()]
                or [direct_url]}


if __name__ == "__main__":
    worker.serve(setup)
