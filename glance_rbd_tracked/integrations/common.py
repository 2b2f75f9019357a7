"""What the Nova and Cinder integrations share.  Imports neither of them.

Rules this module owns:

* An integration changes Nova or Cinder only on a release line it knows,
  and only when every method it replaces or calls has the signature it was
  written against (:func:`check`).  Otherwise it leaves them alone.
* A disk or volume is the store's business (:func:`has_chains`) when the
  store made chain snapshots of it or retired it; everything else goes
  through Nova's or Cinder's stock code, unchanged.
* The Glance pool a disk's chains went to is read from the disk's own
  records (:func:`glance_pool`), so destroying a disk needs no setting.
* Nova and Cinder run with the chain policy kept in Glance's pool
  (:func:`policies`); their ``chain_pools`` option counts only with their
  ``policy_override`` option, and each records its view for doctor.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import importlib
import inspect
from typing import Any

from glance_rbd_tracked import core
from glance_rbd_tracked import policy
from glance_rbd_tracked import settings

#: Every chain snapshot's name starts with this (``rbd_tracked-<image id>``).
CHAIN_SNAPSHOT_PREFIX = core.chain_snapshot_name("")


@dataclasses.dataclass(frozen=True)
class Known:
    """A release line of a product and the signatures an integration needs.

    ``signatures`` maps ``module:Class.attribute`` to the text of
    ``inspect.signature`` on that release, e.g. ``"(self, volume)"``.
    """

    product: str
    series: str  # a version prefix: "34."
    signatures: Mapping[str, str]


def resolve(path: str) -> Any:
    """The object named ``module:Class.attribute``."""
    module, _, attributes = path.partition(":")
    obj: Any = importlib.import_module(module)
    for name in filter(None, attributes.split(".")):
        obj = getattr(obj, name)
    return obj


def signature(obj: Any) -> str:
    return str(inspect.signature(obj))


def check(known: Known, version: str,
          find: Callable[[str], Any] = resolve) -> str | None:
    """Why the integration must leave the product alone, or None when the
    release and every signature are the ones it knows."""
    if not version.startswith(known.series):
        return (f"{known.product} {version} is not a release it knows "
                f"({known.series}x)")
    for path, expected in known.signatures.items():
        try:
            actual = signature(find(path))
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            return f"{path} is not there ({exc})"
        if actual != expected:
            return (f"{path} is {actual}, not the {expected} it was written "
                    "against")
    return None


def has_chains(state: core.ImageState) -> bool:
    """The store made chain snapshots of this disk, or retired it."""
    records = state.records
    return bool(records.snaps or records.retired is not None
                or any(s.name.startswith(CHAIN_SNAPSHOT_PREFIX)
                       for s in state.snaps))


def glance_pool(state: core.ImageState) -> str | None:
    """The pool of the chain images made from this disk, from its records."""
    for record in state.records.snaps:
        pool, _, _ = record.clone.rpartition("/")
        if pool:
            return pool
    return None



def policies(service: str, override_option: str, override: bool,
             chain_pools: Sequence[str] | None) -> settings.Policies:
    """The chain policy ``service`` runs with: the cluster's, unless
    ``override`` (its option ``override_option``); then its
    ``chain_pools`` (None: unset) over the defaults."""
    return settings.Policies(
        policy.Local(override=bool(override),
                     chain_pools=None if chain_pools is None
                     else frozenset(chain_pools)),
        service=service, override_option=override_option)
