"""Nova's and Cinder's own image paths, stock and with the integrations.

Runs on the cluster named by $CEPH_CONF (``tools/bench openstack`` starts
one per objectstore and monitor setting); the code timed is Nova's and
Cinder's, each in its own process (tests/e2e/openstack/*_side.py).  Prints
medians with their spread, and the ratios; asserts no time.

* Nova: ``imagebackend.Rbd.direct_snapshot`` (what of an instance snapshot
  grows with the disk), stock (snapshot, clone, flatten, snapshot) against
  the integration (a chain), for an instance disk booted from a Glance
  image with 1 GiB and 4 GiB written;
* Cinder: ``copy_volume_to_image`` of a 1 GiB volume, all of it written,
  stock (streamed through glance-api) against ``TrackedRBDDriver`` (a chain
  and the locations API), through a real glance-api (tools/glance-api-dev,
  started and stopped here).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from typing import Any
import uuid

import figures
from figures import objectstore
from figures import paxos_interval
from figures import spread
import rbd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from glance_rbd_tracked import ceph as ceph_mod  # noqa: E402
from glance_rbd_tracked import core  # noqa: E402
from glance_rbd_tracked import lifecycle  # noqa: E402
from tests import sides  # noqa: E402
from tests.e2e.openstack.worker import Worker  # noqa: E402
from tests.sides import Side  # noqa: E402

GiB = 1 << 30
POLICY = core.Policy(pool="images")


def admin_keyring(conf: str) -> dict[str, str]:
    """The keyring [global] names, for Cinder's stock upload: os-brick
    otherwise looks in /etc/ceph (empty on a cluster without cephx)."""
    path = sides.conf_value(conf, "keyring")
    return {"keyring": path} if path and os.path.exists(path) else {}


def write(conf: str, spec: str, gib: int) -> None:
    """Write ``gib`` GiB into the image, as a guest or a user would."""
    subprocess.run(["rbd", "-c", conf, "bench", "--io-type", "write",
                    "--io-size", "4M", "--io-threads", "8", "--io-pattern",
                    "seq", "--io-total", f"{gib}G", spec],
                   check=True, capture_output=True)


def purge(side: Side, pool: str, name: str) -> None:
    with side.ioctx(pool) as ioctx:
        figures.purge(ioctx, name)


def parent(side: Side, pool: str, name: str) -> str | None:
    try:
        return side.parent_of(pool, name)
    except rbd.ImageNotFound:
        return None


@contextlib.contextmanager
def workers(module: str, conf: str, glance_url: str,
            **config: Any) -> Iterator[dict[str, Worker]]:
    """The stock and the integrated Nova or Cinder, side by side (their
    state and logs in a directory removed afterwards)."""
    started: dict[str, Worker] = {}
    top = tempfile.TemporaryDirectory(prefix=f"bench-{module}-")
    try:
        for mode in ("stock", "integration"):
            state = os.path.join(top.name, mode)
            os.mkdir(state)
            started[mode] = Worker(
                f"tests.e2e.openstack.{module}",
                {"ceph_conf": conf, "mode": mode, "glance_url": glance_url,
                 "state_dir": state, **config}, f"{state}/worker.log")
        yield started
    finally:
        for worker in started.values():
            worker.close()
        top.cleanup()


def bench_nova(conf: str, side: Side, store: Any, sizes: list[int],
               runs: int) -> dict[Any, list[float]]:
    times: dict[Any, list[float]] = {}
    with workers("nova_side", conf, "http://127.0.0.1:9") as nova:
        for gib in sizes:
            # a Glance image (as the rbd store writes it) and an instance
            # booted from it (a clone), with gib GiB written by the guest
            base, instance = str(uuid.uuid4()), str(uuid.uuid4())
            disk = f"{instance}_disk"
            side.create("images", base, gib * GiB, snaps=["snap"])
            side.clone("images", base, "snap", "vms", disk)
            write(conf, f"vms/{disk}", gib)
            for run in range(runs):
                order = ("stock", "integration")
                for mode in order if run % 2 == 0 else order[::-1]:
                    image_id = str(uuid.uuid4())
                    made = nova[mode].call("direct_snapshot",
                                           instance=instance,
                                           image_id=image_id,
                                           base_image_id=base)
                    chain = parent(side, "images", image_id)
                    assert (chain is None) == (mode == "stock"), (mode, chain)
                    times.setdefault((mode, gib), []).append(made["seconds"])
                    if mode == "integration":
                        times.setdefault("clone format", []).append(
                            side.clone_format_of("images", image_id))
                    if mode == "stock":
                        purge(side, "images", image_id)
                    else:
                        lifecycle.delete(store, "images", image_id, POLICY)
                    print(f"  nova {mode:11s} {gib} GiB run {run + 1}: "
                          f"{made['seconds']:.3f} s", file=sys.stderr)
            assert side.snapshots("vms", disk) == [], "a snapshot was left"
            side.remove("vms", disk)
            purge(side, "images", base)
    return times


def wait_active(glance: Any, image_id: str, timeout: float = 600) -> None:
    """Active, and glance's own hashing task (a location's) ended, so that
    it does not run into the next measurement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image = glance.images.get(image_id)
        tasks = glance.images.get_associated_image_tasks(image_id)["tasks"]
        if image["status"] == "active" and all(
                t["status"] in ("success", "failure") for t in tasks):
            return
        time.sleep(0.2)
    raise AssertionError(f"image {image_id} is not active")


def bench_cinder(conf: str, side: Side, gib: int, runs: int,
                 port: int) -> dict[str, list[float]]:
    from tests.sides import glance_client

    times: dict[str, list[float]] = {}
    with figures.glance_api(port, CEPH_CONF=conf) as url, \
            workers("cinder_side", conf, url, **admin_keyring(conf)) as cinder:
        glance = glance_client(url, "loopback-noauth")
        volumes = {}
        for mode, worker in cinder.items():
            volumes[mode] = worker.call("create_volume", size_gib=gib)
            write(conf, f"volumes/{volumes[mode]['name']}", gib)
        for run in range(runs):
            order = ("stock", "integration")
            for mode in order if run % 2 == 0 else order[::-1]:
                image_id = glance.images.create(
                    name="bench", disk_format="raw",
                    container_format="bare")["id"]
                made = cinder[mode].call(
                    "copy_volume_to_image",
                    volume_id=volumes[mode]["id"], image_id=image_id)
                chain = parent(side, "images", image_id)
                assert (chain is None) == (mode == "stock"), (mode, chain)
                times.setdefault(mode, []).append(made["seconds"])
                wait_active(glance, image_id)
                glance.images.delete(image_id)
                print(f"  cinder {mode:11s} {gib} GiB run {run + 1}: "
                      f"{made['seconds']:.3f} s", file=sys.stderr)
        for mode, worker in cinder.items():
            worker.call("delete_volume", volume_id=volumes[mode]["id"])
    return times


def ratio(stock: list[float], chain: list[float]) -> str:
    import statistics
    return f"{statistics.median(stock) / statistics.median(chain):6.1f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-gib", default="1,4",
                        help="GiB written in the instance disk (default 1,4)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cinder-gib", type=int, default=1)
    parser.add_argument("--cinder-runs", type=int, default=3)
    parser.add_argument("--no-cinder", action="store_true")
    parser.add_argument("--glance-port", type=int,
                        default=int(os.environ.get("BENCH_GLANCE_PORT",
                                                   "9494")))
    args = parser.parse_args()
    conf = os.environ["CEPH_CONF"]
    sizes = [int(s) for s in args.sizes_gib.split(",") if s]
    side = Side(conf)
    store = ceph_mod.connect(conf)
    try:
        nova = bench_nova(conf, side, store, sizes, args.runs)
        formats = sorted(set(nova.pop("clone format")))
        print(f"objectstore: {objectstore(conf)}; monitor "
              f"paxos_propose_interval: {paxos_interval()}; clone format "
              f"{', '.join(str(int(f)) for f in formats)}")
        print("\nNova Rbd.direct_snapshot (seconds)")
        for gib in sizes:
            stock, chain = nova["stock", gib], nova["integration", gib]
            print(f"  {gib} GiB written  stock (clone+flatten) "
                  f"{spread(stock)}")
            print(f"  {gib} GiB written  integration (chain)  "
                  f"{spread(chain)}")
            print(f"  {gib} GiB written  stock / integration  "
                  f"{ratio(stock, chain)}")
        if len(sizes) > 1:
            first, last = sizes[0], sizes[-1]
            print(f"  integration {last} GiB / {first} GiB: "
                  f"{ratio(nova['integration', last], nova['integration', first])}"
                  f"   stock {last} GiB / {first} GiB: "
                  f"{ratio(nova['stock', last], nova['stock', first])}")
        if not args.no_cinder:
            cinder = bench_cinder(conf, side, args.cinder_gib,
                                  args.cinder_runs, args.glance_port)
            print(f"\nCinder copy_volume_to_image, {args.cinder_gib} GiB "
                  "volume (seconds)")
            print(f"  stock (streamed through glance-api)  "
                  f"{spread(cinder['stock'])}")
            print(f"  TrackedRBDDriver (chain + location)  "
                  f"{spread(cinder['integration'])}")
            print(f"  stock / TrackedRBDDriver             "
                  f"{ratio(cinder['stock'], cinder['integration'])}")
    finally:
        store.close()
        side.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
