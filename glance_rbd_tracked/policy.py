"""The chain policy kept in the cluster: its records, and which policy a
service runs with.  Pure: no I/O, no clock (``now`` is passed in).

Rules this module owns:

* The chain policy (chain pools, clone-depth limit, stock-image adoption)
  is :class:`core.Policy`; its defaults are ``core.Policy``'s and nowhere
  else.  The cluster holds one per store pool, in that pool's RBD pool
  metadata under :data:`POLICY_KEY` (a :class:`PolicyRecord`), written by
  ``glance-rbd-tracked doctor --execute`` from glance-api's configuration.
* A service runs with the cluster's policy (:func:`resolve`).  Its own
  options count only when it says so (``override``): then the options it
  sets win, over ``core.Policy``'s defaults.  While the cluster holds no
  policy (before the first ``doctor --execute``), the options it sets
  apply, over the defaults, as before there was a cluster policy.  A
  cluster value this release may not read is an error, never a guess: the
  policy decides what may be reclaimed.
* What doctor sets (:func:`wanted`): each option glance-api's configuration
  sets, else the cluster's value, else the default; an option left unset
  never changes the cluster.
* Each long-running service records the policy it runs with (a
  :class:`View`: service, host, source, the policy) in the same pool
  metadata, under :func:`view_key`, when it first resolves it and whenever
  it changes; doctor compares every view with the cluster's policy.
* Records are versioned as the image records are (``"v"``, ``"compat"``,
  :mod:`schema`), and, like them, every field is a string.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import schema

POLICY_KEY = schema.KEY_PREFIX + "policy"
VIEW_KEY_PREFIX = schema.KEY_PREFIX + "view."
#: the fields of core.Policy that are the chain policy (``pool`` is not:
#: it is where the policy is kept)
FIELDS = ("chain_pools", "max_clone_depth", "adopt_stock_images")


class Source(enum.StrEnum):
    """Where the policy a service runs with comes from."""

    CLUSTER = "cluster"      # the store pool's metadata
    OVERRIDE = "override"    # the service's own options, on purpose
    LOCAL = "local"          # its own options: the cluster holds none yet


@dataclasses.dataclass(frozen=True)
class Local:
    """A service's own policy options; None: not set."""

    override: bool = False
    chain_pools: frozenset[str] | None = None
    max_clone_depth: int | None = None
    adopt_stock_images: bool | None = None

    def values(self) -> dict[str, object]:
        """The options that are set, by :data:`FIELDS` name."""
        return {name: getattr(self, name) for name in FIELDS
                if getattr(self, name) is not None}


@dataclasses.dataclass(frozen=True)
class Resolved:
    """The policy a service runs with, where it comes from, and which of
    its own options it ignores (set, but not what the cluster says)."""

    policy: core.Policy
    source: Source
    ignored: tuple[str, ...] = ()


def configured(pool: str, local: Local) -> core.Policy:
    """The service's options over ``core.Policy``'s defaults."""
    return core.Policy(pool=pool, **local.values())  # type: ignore[arg-type]


def resolve(pool: str, local: Local,
            cluster: core.Policy | None) -> Resolved:
    """The policy to run with, given the cluster's (None: it holds none;
    not read at all when ``local.override``)."""
    if local.override:
        return Resolved(configured(pool, local), Source.OVERRIDE)
    if cluster is None:
        return Resolved(configured(pool, local), Source.LOCAL)
    policy = dataclasses.replace(cluster, pool=pool)
    ignored = tuple(name for name, value in local.values().items()
                    if getattr(policy, name) != value)
    return Resolved(policy, Source.CLUSTER, ignored)


def wanted(pool: str, local: Local, cluster: core.Policy | None
           ) -> core.Policy:
    """What ``doctor --execute`` keeps in the cluster: the options set in
    glance-api's configuration, else the cluster's, else the defaults."""
    base = core.Policy(pool=pool) if cluster is None else \
        dataclasses.replace(cluster, pool=pool)
    return dataclasses.replace(base, **local.values())  # type: ignore[arg-type]


def same(a: core.Policy, b: core.Policy) -> bool:
    """The same chain policy (wherever each is kept)."""
    return all(getattr(a, name) == getattr(b, name) for name in FIELDS)


def fingerprint(policy: core.Policy) -> str:
    """A short digest of the chain policy, to compare views at a glance."""
    return hashlib.sha256(describe(policy).encode()).hexdigest()[:12]


def describe(policy: core.Policy) -> str:
    """``chain_pools=vms,volumes max_clone_depth=5 adopt_stock_images=true``"""
    return " ".join(f"{name}={value}" for name, value in _strings(policy).items())


def differences(a: core.Policy, b: core.Policy) -> tuple[str, ...]:
    """``name a -> b`` for each field of the chain policy that differs."""
    sa, sb = _strings(a), _strings(b)
    return tuple(f"{name} {sa[name] or '(none)'} -> {sb[name] or '(none)'}"
                 for name in FIELDS if sa[name] != sb[name])


# -- records -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PolicyRecord(schema.Versioned):
    """The cluster's chain policy, as kept under :data:`POLICY_KEY`:
    ``chain_pools`` comma-separated and sorted, ``max_clone_depth`` a
    number, ``adopt_stock_images`` ``true`` or ``false``; when it was set,
    and on which host (``by``)."""

    chain_pools: str
    max_clone_depth: str
    adopt_stock_images: str
    set: str
    by: str


@dataclasses.dataclass(frozen=True)
class View(schema.Versioned):
    """The policy a service runs with, as it recorded it ``since``."""

    service: str
    host: str
    source: str
    fingerprint: str
    chain_pools: str
    max_clone_depth: str
    adopt_stock_images: str
    since: str

    @property
    def key(self) -> str:
        return view_key(self.service, self.host)


def view_key(service: str, host: str) -> str:
    return f"{VIEW_KEY_PREFIX}{service}@{host}"


def to_record(policy: core.Policy, now: str, by: str) -> PolicyRecord:
    return PolicyRecord(**_strings(policy), set=now, by=by)


def view_of(resolved: Resolved, service: str, host: str, now: str) -> View:
    return View(service=service, host=host, source=resolved.source.value,
                fingerprint=fingerprint(resolved.policy),
                **_strings(resolved.policy), since=now)


def dump(record: PolicyRecord | View) -> str:
    return schema.to_json(record)


def load_policy(value: str, pool: str) -> core.Policy:
    """The cluster's policy from its record; CorruptMetadata when this
    release may not read it or a field does not parse."""
    return _policy(schema.from_json(PolicyRecord, value, POLICY_KEY),
                   pool, POLICY_KEY)


def load_view(key: str, value: str) -> tuple[View, core.Policy]:
    """A service's view and the policy it names; CorruptMetadata as for
    :func:`load_policy`."""
    view = schema.from_json(View, value, key)
    if view.key != key:
        raise errors.CorruptMetadata(f"metadata {key!r} describes "
                                     f"{view.key!r}")
    return view, _policy(view, "", key)


def _strings(policy: core.Policy) -> dict[str, str]:
    return {"chain_pools": ",".join(sorted(policy.chain_pools)),
            "max_clone_depth": str(policy.max_clone_depth),
            "adopt_stock_images": str(policy.adopt_stock_images).lower()}


def _policy(record: PolicyRecord | View, pool: str, key: str) -> core.Policy:
    pools = frozenset(filter(None, record.chain_pools.split(",")))
    depth = record.max_clone_depth
    adopt = record.adopt_stock_images
    if not depth.isdigit() or int(depth) < 1 or adopt not in ("true", "false"):
        raise errors.CorruptMetadata(
            f"metadata {key!r} has max_clone_depth {depth!r} and "
            f"adopt_stock_images {adopt!r}: a number from 1, and true or "
            "false")
    return core.Policy(pool=pool, chain_pools=pools,
                       max_clone_depth=int(depth),
                       adopt_stock_images=adopt == "true")
