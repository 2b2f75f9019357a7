"""The cluster's and the pools' configuration the store depends on (what
``glance-rbd-tracked doctor`` reports), read and set.

Access is probed without changing anything: a removal of an object that
does not exist needs write access and answers ENOENT when allowed, EPERM
when not; a call of the rbd class on ``rbd_children`` answers EPERM only
when listing clones is not allowed.

The chain policy (:mod:`glance_rbd_tracked.policy`) and the views of the
services are RBD pool metadata of the store's pool (``rbd pool metadata``):
librbd's ``pool_metadata_*`` calls, a class call on the pool's
``rbd_info`` object, bounded like every OSD operation by the store's op
timeout.

Failure detection is read from the monitors' configuration database
(``ceph config get``, which answers the default for what is not set there;
a value set only in the daemons' ceph.conf files is not seen).  A key that
may not read it (``profile rbd`` may not) reads its own configuration
instead: its ceph.conf and what the monitors give every client (``global``
settings), which is where such a setting belongs, as the monitors use it too.
"""

from __future__ import annotations

from collections.abc import Callable
import errno
import json
import logging
import os
from typing import Any

from glance_rbd_tracked import doctor
from glance_rbd_tracked import errors
from glance_rbd_tracked.ceph.connection import Connection

LOG = logging.getLogger(__name__)

_PROBE = "rbd_tracked.doctor-probe"  # never created


class Setup:
    """Implements :class:`glance_rbd_tracked.ports.ClusterSetup`."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def facts(self, store_pool: str,
              chain_pools: tuple[str, ...]) -> doctor.Facts:
        c = self.connection
        client = c.client()
        with c.translated("reading the OSD map"):
            ret, out, _ = client.mon_command(
                json.dumps({"prefix": "osd dump", "format": "json"}), b"")
        release = json.loads(out).get("require_min_compat_client") \
            if ret == 0 else None
        with c.translated("reading the client configuration"):
            fmt = client.conf_get("rbd_default_clone_format")
        with c.translated("listing the pools"):
            others = sorted(set(client.list_pools())
                            - {store_pool, *chain_pools})
        pools = tuple(self._pool(client, name) for name in dict.fromkeys(
            (store_pool, *chain_pools, *others)))
        grace, interval, source = self._failure_detection(client)
        return doctor.Facts(
            require_min_compat_client=release, client_clone_format=fmt,
            user=c.user or "admin", store_pool=store_pool,
            chain_pools=chain_pools, pools=pools, op_timeout=c.timeout,
            osd_heartbeat_grace=grace, osd_heartbeat_interval=interval,
            failure_detection_from=source)

    def _failure_detection(self, client: Any) -> tuple[
            float | None, float | None, str]:
        """osd_heartbeat_grace (the longer of the OSDs' and the
        monitors'), osd_heartbeat_interval, and where they were read."""
        osd = self._config(client, "osd", "osd_heartbeat_grace")
        mon = self._config(client, "mon", "osd_heartbeat_grace")
        interval = self._config(client, "osd", "osd_heartbeat_interval")
        if osd is not None and mon is not None and interval is not None:
            return (max(osd, mon), interval,
                    "the monitors' configuration database")
        c = self.connection
        with c.translated("reading the client configuration"):
            own = [client.conf_get(key) for key in (
                "osd_heartbeat_grace", "osd_heartbeat_interval")]
        try:
            return (float(own[0]), float(own[1]),
                    f"client.{c.user or 'admin'}'s own configuration, as it "
                    "may not read the monitors' configuration database")
        except (TypeError, ValueError):
            return None, None, ""

    def _config(self, client: Any, who: str, key: str) -> float | None:
        """``ceph config get WHO KEY`` as a number; None when it cannot be
        told (a key that may not read the configuration).  Bounded by the
        connection's ``rados_mon_op_timeout``."""
        c = self.connection
        what = f"reading {key} of the {who}s"
        with c.translated(what):
            ret, out, err = client.mon_command(json.dumps(
                {"prefix": "config get", "who": who, "key": key}), b"")
        if ret == -errno.ETIMEDOUT:
            raise errors.ClusterError(
                f"{what}: the monitors did not answer within {c.timeout} s",
                timed_out=True)
        try:
            if ret == 0:
                return float(out.decode().strip())
        except ValueError:
            pass
        LOG.info("cannot tell %s of the %ss: %s", key, who,
                 err or (os.strerror(-ret) if ret else repr(out)))
        return None

    def _pool(self, client: Any, name: str) -> doctor.PoolFacts:
        """What can be told of one pool (doctor.evaluate looks only at
        listing clones on the pools that are not the store's)."""
        c, rados, rbd = self.connection, self.connection.rados, \
            self.connection.rbd
        with c.translated(f"looking up pool {name}"):
            if not client.pool_exists(name):
                return doctor.PoolFacts(name, exists=False)
        with c.ioctx(name) as ioctx:
            def allowed(probe: Callable[[], Any]) -> bool | None:
                try:
                    probe()
                except (rados.PermissionError, rados.PermissionDeniedError,
                        rbd.PermissionError):
                    return False
                except (rados.Error, rbd.Error):
                    pass  # allowed, and answered with another error
                return True

            def option() -> bool | None:
                try:
                    value = rbd.RBD().pool_metadata_get(
                        ioctx, "conf_" + doctor.PARENT_TO_TRASH)
                except KeyError:
                    return False
                except rbd.Error:
                    return None
                return value.strip().lower() in ("true", "1", "yes")

            return doctor.PoolFacts(
                name, exists=True, parent_to_trash=option(),
                can_read=allowed(lambda: rbd.RBD().list(ioctx)),
                can_write=allowed(lambda: ioctx.remove_object(_PROBE)),
                can_list_clones=allowed(lambda: ioctx.execute(
                    "rbd_children", "rbd", "get_children", b"")))

    def set_pool_option(self, pool: str, key: str, value: str) -> None:
        """A pool-level librbd option (``rbd config pool set``)."""
        c = self.connection
        with c.ioctx(pool) as ioctx, \
                c.translated(f"setting {key} on pool {pool}"):
            c.rbd.RBD().config_set(ioctx, key, value)
        if self._read_option(pool, key) != value:
            raise errors.Unfinished(f"{key} on pool {pool} does not read "
                                    f"back as {value}")

    def _read_option(self, pool: str, key: str) -> str | None:
        # librbd keeps a pool's options as its metadata, prefixed conf_
        return self.pool_metadata(pool, "conf_" + key)

    # -- the chain policy ------------------------------------------------------

    def pool_metadata(self, pool: str, key: str) -> str | None:
        """One key of the pool's RBD metadata; None when it is not set."""
        c = self.connection
        with c.ioctx(pool) as ioctx, \
                c.translated(f"reading {key} of pool {pool}"):
            try:
                return str(c.rbd.RBD().pool_metadata_get(ioctx, key))
            except KeyError:
                return None

    def pool_metadata_with(self, pool: str, prefix: str) -> dict[str, str]:
        """Every key of the pool's RBD metadata starting with ``prefix``."""
        c = self.connection
        with c.ioctx(pool) as ioctx, \
                c.translated(f"listing the metadata of pool {pool}"):
            return {str(k): str(v) for k, v in
                    c.rbd.RBD().pool_metadata_list(ioctx)
                    if str(k).startswith(prefix)}

    def set_pool_metadata(self, pool: str, key: str, value: str) -> None:
        """Set one key of the pool's RBD metadata, and read it back."""
        c = self.connection
        with c.ioctx(pool) as ioctx, \
                c.translated(f"setting {key} of pool {pool}"):
            c.rbd.RBD().pool_metadata_set(ioctx, key, value)
        if self.pool_metadata(pool, key) != value:
            raise errors.Unfinished(f"{key} of pool {pool} does not read "
                                    "back as it was set")
