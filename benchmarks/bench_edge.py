"""Copies to an edge site, side by side in one run (``tools/bench edge``).

An instance snapshot (a chain image) that differs from its base by 1 %,
clustered (one region) or scattered (4 KiB in every MiB), is copied to an
edge cluster behind a tbf-shaped link (tools/edge-rig) that already holds
the base, three ways:

* stock: Glance's copy-image with glance_store's stock rbd driver on both
  backends (the whole image through glance-api's staging area);
* ours: the same copy-image with rbd_tracked on both backends;
* direct: ``glance-rbd-tracked copy`` (copies.plan + copies.execute).

Bytes are the link's own counters (``ip -s link``: what went to the edge),
times are wall clock from the request to the copy being complete.

    CEPH_CONF=... python benchmarks/bench_edge.py --sizes-mib 1024,4096
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

import rbd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import figures

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import chains
from glance_rbd_tracked import copies
from glance_rbd_tracked import core
from glance_rbd_tracked import lifecycle
from tests.sides import glance_client
from tests.sides import register_location
from tests.sides import wait_active
from tests.sides import wait_in_store

MiB = 1 << 20
TOOLS = os.path.join(os.path.dirname(__file__), "..", "tools")
POLICY = core.Policy(pool="images")


def rig(*args: str) -> str:
    return subprocess.run([os.path.join(TOOLS, "edge-rig"), *args],
                          check=True, capture_output=True, text=True,
                          timeout=600).stdout


def to_edge() -> int:
    return int(json.loads(rig("counters"))["to_edge"])


def glance_api(name: str, port: int, driver: str, edge_conf: str,
               edge_pool: str) -> dict[str, str]:
    env = dict(os.environ, GLANCE_DEV_DIR=f"/tmp/grt-bench-edge-{name}",
               GLANCE_DEV_PORT=str(port), GLANCE_DEV_DRIVER=driver,
               GLANCE_DEV_EDGE_CONF=edge_conf, GLANCE_DEV_EDGE_POOL=edge_pool)
    out = subprocess.run([os.path.join(TOOLS, "glance-api-dev"), "up"],
                         env=env, check=True, capture_output=True, text=True,
                         timeout=900).stdout
    settings = dict(line.split("=", 1) for line in
                    out.replace("export ", "").split() if "=" in line)
    settings["dir"] = env["GLANCE_DEV_DIR"]
    settings["port"] = str(port)
    return settings


def glance_down(settings: dict[str, str]) -> None:
    subprocess.run([os.path.join(TOOLS, "glance-api-dev"), "down"],
                   env=dict(os.environ, GLANCE_DEV_DIR=settings["dir"],
                            GLANCE_DEV_PORT=settings["port"]),
                   capture_output=True, timeout=120)


def copy_image(glance, image_id: str) -> None:
    glance.images.image_import(image_id, method="copy-image",
                               stores=["edge1"])
    wait_in_store(glance, image_id, "edge1", 3600)


def measured(what):
    before, began = to_edge(), time.monotonic()
    what()
    return to_edge() - before, time.monotonic() - began


def snapshot(central, base: str, size: int, pattern: str) -> tuple[str, int]:
    """A chain image of a disk cloned from ``base`` and changed by 1 %;
    returns it and the bytes changed."""
    disk = f"bench-{uuid.uuid4().hex[:8]}"
    central.changes.clone(f"images/{base}@snap", "vms", disk)
    client = central.connection.client()
    with client.open_ioctx("vms") as ioctx, rbd.Image(ioctx, disk) as image:
        if pattern == "clustered":
            changed = size // 100
            image.write(os.urandom(changed), size // 3 + 12345)
        else:
            changed = 0
            for offset in range(0, size, MiB):
                image.write(os.urandom(4096), offset + 77 * 4096)
                changed += 4096
    name = str(uuid.uuid4())
    chains.snapshot(central, [chains.Request(f"vms/{disk}", name)], POLICY)
    return name, changed


def register(glance, settings, central, image_id: str, location: str) -> None:
    h = hashlib.sha512()
    for chunk in central.data.read("images", image_id, "snap"):
        h.update(chunk)
    service = glance_client(settings["OS_IMAGE_URL"],
                            settings["OS_AUTH_TOKEN"], as_nova=True)
    register_location(glance, service, image_id, location, h.hexdigest())
    wait_active(glance, image_id, 3600)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mib", default="1024,4096")
    parser.add_argument("--patterns", default="clustered,scattered")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of the direct route per image (its edge "
                             "copy removed between them)")
    parser.add_argument("--json", help="write the rows here too")
    parser.add_argument("--rst", help="write the table here, for the docs")
    parser.add_argument("--plot", help="write the figure here (PNG)")
    args = parser.parse_args()
    edge_conf = rig("env").split("=", 1)[1].strip()
    central = ceph_mod.connect(os.environ["CEPH_CONF"])
    far = ceph_mod.connect(edge_conf)
    ours = glance_api("ours", 9710, "rbd_tracked", edge_conf, "images")
    stock = glance_api("stock", 9711, "rbd", edge_conf, "volumes")
    g_ours = glance_client(ours["OS_IMAGE_URL"], ours["OS_AUTH_TOKEN"])
    g_stock = glance_client(stock["OS_IMAGE_URL"], stock["OS_AUTH_TOKEN"])
    rows = []
    try:
        for size_mib in (int(s) for s in args.sizes_mib.split(",")):
            size = size_mib * MiB
            base = g_ours.images.create(name="base", disk_format="raw",
                                        container_format="bare")["id"]
            data = os.urandom(size)
            g_ours.images.upload(base, io.BytesIO(data), image_size=size)
            del data
            base_bytes, base_s = measured(
                lambda b=base: copy_image(g_ours, b))
            print(f"base {size_mib} MiB to the edge, whole: "
                  f"{base_bytes / MiB:.1f} MiB in {base_s:.1f} s",
                  file=sys.stderr, flush=True)
            for pattern in args.patterns.split(","):
                name, changed = snapshot(central, base, size, pattern)
                location = (f"rbd://{central.fsid()}/images/{name}/"
                            f"{core.STOCK_SNAPSHOT}")
                for g, s in ((g_ours, ours), (g_stock, stock)):
                    g.images.create(id=name, name=f"snap-{pattern}",
                                    disk_format="raw",
                                    container_format="bare")
                    register(g, s, central, name, location)
                row = {"size_mib": size_mib, "pattern": pattern,
                       "changed": changed}
                row["stock_bytes"], row["stock_s"] = measured(
                    lambda n=name: copy_image(g_stock, n))
                row["ours_bytes"], row["ours_s"] = measured(
                    lambda n=name: copy_image(g_ours, n))
                # the direct route on the same image: its edge copy goes
                def direct(name=name):
                    planned = copies.plan(central, far, "images", "images",
                                          name)
                    copies.execute(central, far, planned, "images")
                runs = []
                for _ in range(max(args.repeats, 1)):
                    lifecycle.delete(far, "images", name, POLICY)
                    runs.append(measured(direct))
                row["direct_bytes"] = statistics.median(b for b, _ in runs)
                row["direct_s"] = statistics.median(s for _, s in runs)
                row["direct_runs_s"] = [round(s, 3) for _, s in runs]
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        glance_down(ours)
        glance_down(stock)
        central.close()
        far.close()
    stores = (f"objectstore: {figures.objectstore(os.environ['CEPH_CONF'])}"
              f" (central), {figures.objectstore(edge_conf)} (edge)")
    print(stores)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)
    if args.rst:
        with open(args.rst, "w") as out:
            out.write(rst(rows, stores))
    if args.plot:
        figures.plot_edge(rows, args.plot)
    return 0


def rst(rows, stores: str) -> str:
    """The table as a reStructuredText list-table (doc/source/edge.rst)."""
    lines = [f"Measured by ``tools/bench edge``; {stores}; direct route: "
             "median of its runs.", "",
             ".. list-table::", "   :header-rows: 1", "",
             "   * - image, change", "     - changed",
             "     - stock copy-image", "     - our copy-image",
             "     - direct route", "     - bytes vs the bound (ours / "
             "direct)", "     - time vs stock (ours / direct)"]
    for r in rows:
        size = r["size_mib"] * MiB
        bound = (1.1 * r["changed"] + MiB if r["pattern"] == "clustered"
                 else 0.10 * size)
        lines += [
            f"   * - {r['size_mib']} MiB, {r['pattern']}",
            f"     - {r['changed'] / MiB:.2f} MiB",
            f"     - {r['stock_bytes'] / MiB:.1f} MiB, {r['stock_s']:.1f} s",
            f"     - {r['ours_bytes'] / MiB:.2f} MiB, {r['ours_s']:.1f} s",
            f"     - {r['direct_bytes'] / MiB:.2f} MiB, "
            f"{r['direct_s']:.2f} s (runs: "
            f"{', '.join(str(s) for s in r['direct_runs_s'])})",
            f"     - {r['ours_bytes'] / bound:.2f} / "
            f"{r['direct_bytes'] / bound:.2f}",
            f"     - {100 * r['ours_s'] / r['stock_s']:.1f} % / "
            f"{100 * r['direct_s'] / r['stock_s']:.1f} %"]
    return "\n".join(lines) + "\n"


def table(rows) -> str:
    lines = ["| image | change | changed | stock copy-image | our copy-image "
             "| direct route | bytes: ours / direct vs bound | time: ours / "
             "direct vs stock |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = r["size_mib"] * MiB
        bound = (1.1 * r["changed"] + MiB if r["pattern"] == "clustered"
                 else 0.10 * size)
        lines.append(
            f"| {r['size_mib']} MiB | {r['pattern']} | "
            f"{r['changed'] / MiB:.2f} MiB | "
            f"{r['stock_bytes'] / MiB:.1f} MiB, {r['stock_s']:.1f} s | "
            f"{r['ours_bytes'] / MiB:.2f} MiB, {r['ours_s']:.1f} s | "
            f"{r['direct_bytes'] / MiB:.2f} MiB, {r['direct_s']:.1f} s | "
            f"{r['ours_bytes'] / bound:.2f} / {r['direct_bytes'] / bound:.2f}"
            f" of the bound | {100 * r['ours_s'] / r['stock_s']:.1f} % / "
            f"{100 * r['direct_s'] / r['stock_s']:.1f} % |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
