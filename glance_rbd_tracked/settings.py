"""The store's settings, read from glance-api's own configuration.

glance-api hands the driver its option group; ``glance-rbd-tracked`` reads
the same files with :func:`load`.  Both turn the group into one
:class:`Settings` with :func:`from_group`, so one file drives glance-api, the
CLI and cron, with the same option objects and defaults.

The chain policy is the cluster's (:mod:`glance_rbd_tracked.policy`):
:class:`Policies` reads it for a service, per store pool, and records the
service's view of it.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
import dataclasses
import datetime
import logging
import socket
import threading
import time
from typing import Any

from oslo_config import cfg

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import opts
from glance_rbd_tracked import policy as policy_mod
from glance_rbd_tracked import ports
from glance_rbd_tracked import schema

LOG = logging.getLogger(__name__)

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
    #: the chain policy of the options alone (over core.Policy's defaults):
    #: what runs while the cluster holds none, or with the override
    policy: core.Policy
    local: policy_mod.Local = dataclasses.field(
        default_factory=policy_mod.Local)

    @property
    def pool(self) -> str:
        return self.policy.pool


def from_group(c: Any) -> Settings:
    """Settings from an option group holding :func:`opts.store_opts`."""
    pool = str(c.rbd_store_pool)
    local = local_policy(c, "rbd_tracked_")
    return Settings(
        ceph_conf=c.rbd_store_ceph_conf or None,
        user=c.rbd_store_user or None,
        timeout=c.rbd_tracked_op_timeout,
        connect_timeout=c.rados_connect_timeout,
        chunk_size=c.rbd_store_chunk_size << 20,
        thin=c.rbd_thin_provisioning,
        write_depth=c.rbd_tracked_write_depth,
        read_ahead=c.rbd_tracked_read_ahead,
        policy=policy_mod.configured(pool, local), local=local)


def local_policy(c: Any, prefix: str) -> policy_mod.Local:
    """A service's own chain policy options (``<prefix>chain_pools``, ...,
    ``<prefix>policy_override``) from its option group."""
    pools = getattr(c, prefix + "chain_pools")
    return policy_mod.Local(
        override=bool(getattr(c, prefix + "policy_override")),
        chain_pools=None if pools is None else frozenset(pools),
        max_clone_depth=getattr(c, prefix + "max_clone_depth"),
        adopt_stock_images=getattr(c, prefix + "adopt_stock_images"))


def cluster_policy(setup: ports.ClusterSetup, pool: str
                   ) -> core.Policy | None:
    """The chain policy the cluster keeps in ``pool``; None: none yet."""
    value = setup.pool_metadata(pool, policy_mod.POLICY_KEY)
    return None if value is None else policy_mod.load_policy(value, pool)


def utcnow() -> str:
    return schema.timestamp(datetime.datetime.now(datetime.UTC))


class Policies:
    """The chain policy a service runs with, per store pool.

    The cluster's is read on first use and again at most every
    ``refresh`` seconds (one OSD read), unless ``local.override`` (then it
    is never read).  When what the service runs with changes (its first
    use included), a ``service`` records its view in the pool's metadata;
    a view that cannot be written is logged, and the service goes on.
    When the cluster cannot be read, the last policy read stays in use; a
    policy never read, or one this release may not read, is an error.
    """

    REFRESH = 60.0

    def __init__(self, local: policy_mod.Local, service: str | None = None,
                 override_option: str = "rbd_tracked_policy_override", *,
                 host: str | None = None, refresh: float = REFRESH,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], str] = utcnow) -> None:
        self.local = local
        self.service = service
        self.override_option = override_option
        self.host = host or socket.gethostname()
        self.refresh = refresh
        self._clock, self._now = clock, now
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, policy_mod.Resolved]] = {}

    def get(self, backend: ports.Backend, pool: str) -> core.Policy:
        return self.resolved(backend, pool).policy

    def resolved(self, backend: ports.Backend,
                 pool: str) -> policy_mod.Resolved:
        with self._lock:
            known = self._known.get(pool)
        if known is not None and (self.local.override or
                                  self._clock() - known[0] < self.refresh):
            return known[1]
        try:
            cluster = None if self.local.override else \
                cluster_policy(backend.setup, pool)
        except errors.TrackedError as exc:
            # unreadable is not unreachable: a policy this release may not
            # read is never replaced by an older guess
            if known is None or isinstance(exc, errors.CorruptMetadata):
                raise
            LOG.warning("cannot read the chain policy of pool %s (%s); "
                        "keeping the one read before", pool, exc)
            resolved = known[1]
        else:
            resolved = policy_mod.resolve(pool, self.local, cluster)
        with self._lock:
            self._known[pool] = (self._clock(), resolved)
        if known is None or known[1] != resolved:
            self._changed(backend, pool, resolved)
        return resolved

    def _changed(self, backend: ports.Backend, pool: str,
                 resolved: policy_mod.Resolved) -> None:
        text = policy_mod.describe(resolved.policy)
        if resolved.source is policy_mod.Source.LOCAL:
            # a command need not say it each time: doctor reports it
            LOG.log(logging.INFO if self.service is None else logging.WARNING,
                    "pool %s keeps no chain policy (glance-rbd-tracked "
                    "doctor --execute sets it): running with %s", pool, text)
        elif resolved.source is policy_mod.Source.OVERRIDE:
            LOG.warning("%s: running with the chain policy of this service's "
                        "options, %s, not the cluster's", self.override_option,
                        text)
        else:
            LOG.info("chain policy of pool %s: %s", pool, text)
        if resolved.ignored:
            LOG.warning("options %s differ from the chain policy of pool %s "
                        "and are ignored (%s = true overrides it)",
                        ", ".join(resolved.ignored), pool,
                        self.override_option)
        if self.service is None:
            return
        view = policy_mod.view_of(resolved, self.service, self.host,
                                  self._now())
        try:
            backend.setup.set_pool_metadata(pool, view.key,
                                            policy_mod.dump(view))
        except errors.TrackedError as exc:
            LOG.warning("cannot record the chain policy %s runs with in "
                        "pool %s (%s); doctor will not see it", self.service,
                        pool, exc)


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


def other_backends(backends: dict[str, str], this: str) -> list[str]:
    """The ``rbd_tracked`` backends of ``enabled_backends`` but ``this``."""
    return sorted(name for name, driver in backends.items()
                  if driver == DRIVER and name != this)


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
