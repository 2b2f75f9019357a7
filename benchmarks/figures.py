"""What every benchmark prints (medians with their spread, and the monitor
setting the figures were taken under) and how it clears up."""

from __future__ import annotations

import json
import statistics
import subprocess

import rados
import rbd


def spread(values: list[float], unit: str = "") -> str:
    med = statistics.median(values)
    width = 100 * (max(values) - min(values)) / med if med else 0.0
    return (f"median {med:9.3f}{(' ' + unit) if unit else ''} (min "
            f"{min(values):.3f} .. max {max(values):.3f}, spread "
            f"{width:.0f} %, n={len(values)})")


def paxos_interval() -> str:
    """The monitor's paxos_propose_interval, asked of the daemon itself
    (``ceph config show`` repeats what it last reported, which lags)."""
    res = subprocess.run(["ceph", "tell", "mon.a", "config", "get",
                          "paxos_propose_interval", "--format", "json"],
                         capture_output=True, text=True)
    try:
        return json.loads(res.stdout)["paxos_propose_interval"]
    except (ValueError, KeyError):
        return "unknown"


def purge(ioctx: rados.Ioctx, name: str) -> None:
    """Remove an image the benchmark made, with its snapshots."""
    with rbd.Image(ioctx, name) as image:
        for snap in image.list_snaps():
            if image.is_protected_snap(snap["name"]):
                image.unprotect_snap(snap["name"])
            image.remove_snap(snap["name"])
    rbd.RBD().remove(ioctx, name)
