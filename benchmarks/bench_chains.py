"""Instance-snapshot paths side by side, disks at once, and cleanup cost.

Runs on the cluster named by $CEPH_CONF (``tools/bench-chains`` starts one
per monitor setting).  Prints medians with their spread; asserts no time.

* chain snapshot vs Nova-style clone+flatten vs ``rbd.Image.copy`` for disks
  holding 256 MiB, 1 GiB and 4 GiB of written data; for each chain, the time
  of its hop (clone format 2: the source snapshot moves to the trash
  namespace) and the monitor commits (osdmap epochs) the hop took;
* 1, 4 and 16 disks snapshotted in one call (their step-1 snapshots are
  created concurrently, so the monitor commits them together);
* cleanup (plan + execute) on a pool of many unrelated images holding a few
  candidates.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import time
import uuid

import figures
from figures import paxos_interval
from figures import spread
import rados
import rbd

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import chains
from glance_rbd_tracked import cleanup
from glance_rbd_tracked import core
from glance_rbd_tracked import lifecycle

MiB = 1 << 20
POLICY = core.Policy(pool="images")


def make_disk(pool: str, written: int) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}_disk"
    subprocess.run(["rbd", "create", "--size", f"{max(written // MiB, 1)}M",
                    f"{pool}/{name}"], check=True)
    if written:
        subprocess.run(["rbd", "bench", "--io-type", "write", "--io-size",
                        "4M", "--io-threads", "8", "--io-pattern", "seq",
                        "--io-total", f"{written // MiB}M", f"{pool}/{name}"],
                       check=True, capture_output=True)
    return name


def purge(client: rados.Rados, pool: str, name: str) -> None:
    ioctx = client.open_ioctx(pool)
    try:
        figures.purge(ioctx, name)
    finally:
        ioctx.close()


def osdmap_epoch(client: rados.Rados) -> int:
    _, out, _ = client.mon_command(json.dumps({"prefix": "osd dump",
                                               "format": "json"}), b"")
    return int(json.loads(out)["epoch"])


def time_chain(cluster, client, disk: str) -> tuple[float, float, int]:
    """The chain's time, its hop's time and the monitor commits of the hop
    (0 seconds and -1 commits when there was no hop: clone format 1)."""
    image_id = str(uuid.uuid4())
    marks: dict[str, float | int] = {}

    def step(name: str) -> None:
        if name == "hop":
            marks["epoch"] = osdmap_epoch(client)
            marks["hop"] = time.perf_counter()
        elif name == "done" and "hop" in marks:
            marks["done"] = time.perf_counter()
            marks["commits"] = osdmap_epoch(client) - int(marks["epoch"])

    start = time.perf_counter()
    (made,) = chains.snapshot(cluster, [chains.Request(f"vms/{disk}",
                                                       image_id)], POLICY,
                              on_step=step)
    elapsed = time.perf_counter() - start
    assert made.path == "chain"
    lifecycle.delete(cluster, "images", image_id, POLICY)
    if "done" not in marks:
        return elapsed, 0.0, -1
    hop = float(marks["done"]) - float(marks["hop"])
    return elapsed - hop, hop, int(marks["commits"])


@contextlib.contextmanager
def vms_and_images(client: rados.Rados):
    vms, images = client.open_ioctx("vms"), client.open_ioctx("images")
    try:
        yield vms, images
    finally:
        vms.close()
        images.close()


def time_flatten(client: rados.Rados, disk: str) -> float:
    """What Nova's direct snapshot does: snap, protect, clone, flatten,
    unprotect, remove the snap; then the image's own snapshot."""
    name = str(uuid.uuid4())
    with vms_and_images(client) as (vms, images):
        start = time.perf_counter()
        with rbd.Image(vms, disk) as image:
            image.create_snap("nova")
            image.protect_snap("nova")
        rbd.RBD().clone(vms, disk, "nova", images, name,
                        features=rbd.RBD_FEATURE_LAYERING
                        | rbd.RBD_FEATURE_DEEP_FLATTEN)
        with rbd.Image(images, name) as clone:
            clone.flatten()
        with rbd.Image(vms, disk) as image:
            image.unprotect_snap("nova")
            image.remove_snap("nova")
        with rbd.Image(images, name) as clone:
            clone.create_snap("snap")
            clone.protect_snap("snap")
        elapsed = time.perf_counter() - start
    purge(client, "images", name)
    return elapsed


def time_copy(client: rados.Rados, disk: str) -> float:
    """Cinder's copy_volume_to_image solution A: rbd.Image.copy."""
    name = str(uuid.uuid4())
    with vms_and_images(client) as (vms, images):
        start = time.perf_counter()
        with rbd.Image(vms, disk) as image:
            image.create_snap("copy")
        with rbd.Image(vms, disk, snapshot="copy", read_only=True) as image:
            image.copy(images, name)
        with rbd.Image(vms, disk) as image:
            image.remove_snap("copy")
        with rbd.Image(images, name) as copy:
            copy.create_snap("snap")
            copy.protect_snap("snap")
        elapsed = time.perf_counter() - start
    purge(client, "images", name)
    return elapsed


def bench_paths(cluster, client, sizes_mib: list[int], runs: int) -> dict:
    results: dict = {}
    for size in sizes_mib:
        disk = make_disk("vms", size * MiB)
        n = runs if size <= 1024 else 1
        for _ in range(n):
            chain, hop, commits = time_chain(cluster, client, disk)
            results.setdefault(("chain", size), []).append(chain + hop)
            results.setdefault(("hop", size), []).append(hop)
            results.setdefault(("hop commits", size), []).append(commits)
            results.setdefault(("clone+flatten", size), []).append(
                time_flatten(client, disk))
            results.setdefault(("copy", size), []).append(
                time_copy(client, disk))
        purge(client, "vms", disk)
    return results


def bench_many(cluster, client, counts: list[int], runs: int) -> dict:
    results: dict = {}
    for count in counts:
        disks = [make_disk("vms", 4 * MiB) for _ in range(count)]
        for _ in range(runs):
            requests = [chains.Request(f"vms/{d}", str(uuid.uuid4()))
                        for d in disks]
            start = time.perf_counter()
            made = chains.snapshot(cluster, requests, POLICY)
            results.setdefault(count, []).append(time.perf_counter() - start)
            for m in made:
                lifecycle.delete(cluster, "images", m.glance_id, POLICY)
        for d in disks:
            purge(client, "vms", d)
    return results


def bench_cleanup(cluster, client, unrelated: int, candidates: int,
                  runs: int) -> list[float]:
    ioctx = client.open_ioctx("vms")
    names = [f"unrelated-{uuid.uuid4().hex[:12]}" for _ in range(unrelated)]
    try:
        for name in names:
            rbd.RBD().create(ioctx, name, 1 * MiB)
    finally:
        ioctx.close()
    timings = []
    for _ in range(runs):
        for _ in range(candidates):
            # a retired disk kept by a chain whose clone something else
            # removed: cleanup trims the orphan and reclaims the disk
            disk = make_disk("vms", 0)
            (made,) = chains.snapshot(cluster, [chains.Request(
                f"vms/{disk}", str(uuid.uuid4()))], POLICY)
            lifecycle.retire(cluster, "vms", disk, POLICY)
            purge(client, "images", made.glance_id)
        now = datetime.datetime.now(datetime.UTC)
        start = time.perf_counter()
        items = cleanup.plan(cluster, POLICY, now, datetime.timedelta(0))
        failures = cleanup.execute(cluster, items, POLICY)
        timings.append(time.perf_counter() - start)
        assert not failures, failures
        assert sum(i.actionable for i in items) >= candidates, items
    ioctx = client.open_ioctx("vms")
    try:
        for name in names:
            rbd.RBD().remove(ioctx, name)
    finally:
        ioctx.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", default="256,1024,4096")
    parser.add_argument("--counts", default="1,4,16")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--unrelated", type=int, default=2000)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--only", default="paths,many,cleanup")
    args = parser.parse_args()
    conf = os.environ["CEPH_CONF"]
    cluster = ceph_mod.connect(conf)
    client = rados.Rados(conffile=conf)
    client.connect()
    only = set(args.only.split(","))
    print(f"# cluster {conf}, paxos_propose_interval {paxos_interval()} s, "
          f"{os.cpu_count()} cores", flush=True)
    try:
        if "paths" in only:
            sizes = [int(s) for s in args.sizes_mib.split(",")]
            paths = bench_paths(cluster, client, sizes, args.runs)
            for size in sizes:
                for path in ("chain", "clone+flatten", "copy"):
                    print(f"{path:13} {size:5} MiB written  "
                          f"{spread(paths[(path, size)], 's')}", flush=True)
                hops = paths[("hop", size)]
                commits = sorted(set(paths[("hop commits", size)]))
                share = (statistics.median(hops)
                         / statistics.median(paths[("chain", size)]))
                print(f"  of which the hop to the trash namespace "
                      f"{spread(hops, 's')}, {share:.1%} of the chain; "
                      f"monitor commits {commits}" if commits != [-1] else
                      "  (no hop: clone format 1)", flush=True)
                ratio = (statistics.median(paths[("clone+flatten", size)])
                         / statistics.median(paths[("chain", size)]))
                print(f"ratio flatten/chain at {size} MiB: {ratio:.1f}x"
                      + ("  (target >= 50x at 1 GiB)" if size == 1024
                         else ""), flush=True)
        if "many" in only:
            counts = [int(c) for c in args.counts.split(",")]
            many = bench_many(cluster, client, counts, args.runs)
            for count in counts:
                print(f"{count:3} disks at once       {spread(many[count], 's')}",
                      flush=True)
            ratio = (statistics.median(many[counts[-1]])
                     / statistics.median(many[counts[0]]))
            print(f"ratio {counts[-1]} disks / 1 disk: {ratio:.2f}"
                  "  (target <= 2)", flush=True)
        if "cleanup" in only:
            times = bench_cleanup(cluster, client, args.unrelated,
                                  args.candidates, args.runs)
            print(f"cleanup, {args.unrelated} unrelated images + "
                  f"{args.candidates} candidates  {spread(times, 's')}  "
                  "(target < 2 s)", flush=True)
    finally:
        cluster.close()
        client.shutdown()


if __name__ == "__main__":
    main()
