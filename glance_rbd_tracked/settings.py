"""The store's settings, read from glance-api's own configuration.

glance-api hands the driver its option group; ``glance-rbd-tracked`` reads
the same files with :func:`load`.  Both turn the group into one
:class:`Settings` with :func:`from_group`, so one file drives glance-api, the
CLI and cron, with the same option objects and defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from typing import Any

from oslo_config import cfg

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import opts

DRIVER = "rbd_tracked"
SINGLE_STORE_GROUP = "glance_store"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the store needs from its configuration."""

    ceph_conf: str | None
    user: str | None
    timeout: int  # seconds, for every OSD and monitor operation
    connect_timeout: int  # 0 or less: ``timeout`` (the Connection's rule)
    chunk_size: int
    thin: bool
    write_depth: int
    read_ahead: int
    policy: core.Policy

    @property
    def pool(self) -> str:
        return self.policy.pool


def from_group(c: Any) -> Settings:
    """Settings from an option group holding :func:`opts.store_opts`."""
    pool = str(c.rbd_store_pool)
    return Settings(
        ceph_conf=c.rbd_store_ceph_conf or None,
        user=c.rbd_store_user or None,
        timeout=c.rbd_tracked_op_timeout,
        connect_timeout=c.rados_connect_timeout,
        chunk_size=c.rbd_store_chunk_size << 20,
        thin=c.rbd_thin_provisioning,
        write_depth=c.rbd_tracked_write_depth,
        read_ahead=c.rbd_tracked_read_ahead,
        policy=core.Policy(
            pool=pool,
            adopt_stock_images=c.rbd_tracked_adopt_stock_images,
            chain_pools=frozenset(c.rbd_tracked_chain_pools),
            max_clone_depth=c.rbd_tracked_max_clone_depth))


def load(config_files: Sequence[str] = (), config_dirs: Sequence[str] = (),
         backend: str | None = None) -> Settings:
    """Read glance-api's configuration files as glance-api does.

    With ``enabled_backends`` (multi-store), the store is the backend named
    ``backend``, or the only ``rbd_tracked`` backend, or the default one if
    it is ``rbd_tracked``; without it, the ``[glance_store]`` group.  With no
    files at all, every option has its default.  A file that is missing,
    unreadable or malformed, or a value of the wrong type, is a
    ConfigError.
    """
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.DictOpt("enabled_backends"))
    conf.register_opt(cfg.StrOpt("default_backend"), group=SINGLE_STORE_GROUP)
    group = None
    try:
        conf(args=[], project="glance", prog="glance-api",
             default_config_files=list(config_files),
             default_config_dirs=list(config_dirs),
             validate_default_values=True)
        group = _group(conf.enabled_backends or {},
                       conf[SINGLE_STORE_GROUP].default_backend, backend)
        conf.register_opts(opts.store_opts(), group=group)
        return from_group(conf[group])
    except cfg.Error as exc:
        where = f"[{group}]: " if group else ""
        raise errors.ConfigError(f"{where}{exc}") from None
    except OSError as exc:  # oslo.config passes on all but ENOENT, EACCES
        raise errors.ConfigError(f"cannot read {exc.filename}: "
                                 f"{exc.strerror}") from None


def _group(backends: dict[str, str], default: str | None,
           wanted: str | None) -> str:
    ours = sorted(name for name, driver in backends.items()
                  if driver == DRIVER)
    if wanted is not None:
        if backends.get(wanted) != DRIVER:
            raise errors.ConfigError(
                f"enabled_backends has no {DRIVER} backend {wanted!r} "
                f"(it has: {', '.join(ours) or 'none'})")
        return wanted
    if not backends:
        return SINGLE_STORE_GROUP
    if len(ours) == 1:
        return ours[0]
    if default in ours:
        return default
    raise errors.ConfigError(
        f"enabled_backends has {len(ours)} {DRIVER} backends "
        f"({', '.join(ours) or 'none'}); name one with --backend")
