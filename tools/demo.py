"""Demo: a real glance-api storing images with rbd_tracked, and Nova-style clones.

    eval "$(tools/ceph-dev-cluster up)"
    eval "$(tools/glance-api-dev up)"
    "$VENV/bin/python" tools/demo.py [--size BYTES] [--no-locations]

Needs CEPH_CONF (the cluster glance-api stores into, pools `images` and `vms`) and
OS_IMAGE_URL (glance-api, see tools/glance-api-dev: loopback, no keystone). Prints one
line per step with its duration; exits 1 on the first failed check (after cleaning up
what it created), 2 on bad usage.

Steps: upload an image through the images API (create, PUT file); check its direct_url
is rbd://<the cluster's fsid>/images/<id>/snap; download it and compare; clone its
snapshot into pool `vms` as Nova does; delete the image through the API (204, not 409,
while the clone exists) and find the RBD image retired as <id>_to_be_deleted; remove
the clone and reclaim the retired image. Then, unless --no-locations, an instance
snapshot as a clone chain: boot from a base image, snapshot the disk with the chain
engine (nothing copied), register it with POST /v2/images/{id}/locations (role
`service`, validation data), download and compare, delete the base while the instance
runs, destroy the instance, delete the snapshot: everything is reclaimed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import pathlib
import random
import sys
import time
import urllib.parse
import uuid

from glanceclient import exc as glance_exc

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import chains
from glance_rbd_tracked import core
from glance_rbd_tracked import lifecycle

# Nova, Cinder and the operator are the tests' (tests/sides.py).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from tests.sides import Side
from tests.sides import glance_client
from tests.sides import register_location
from tests.sides import wait_active

POOL = "images"
CLONE_POOL = "vms"
SNAP = "snap"
RETIRED_SUFFIX = "_to_be_deleted"
MiB = 1 << 20


class CheckFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class Steps:
    """Numbered, timed steps: one output line each."""

    def __init__(self) -> None:
        self.number = 0
        self.total_ms = 0.0

    @contextlib.contextmanager
    def __call__(self, title: str):
        self.number += 1
        note: list[str] = []
        start = time.perf_counter()
        try:
            yield note
        except BaseException as exc:
            ms = (time.perf_counter() - start) * 1000
            print(f"{self.number:2d}. {title:<34s} {ms:9.1f} ms  FAILED: {exc}",
                  flush=True)
            raise
        ms = (time.perf_counter() - start) * 1000
        self.total_ms += ms
        print(f"{self.number:2d}. {title:<34s} {ms:9.1f} ms  {' '.join(note)}",
              flush=True)


def image_bytes(size: int, seed: int) -> bytes:
    """Non-trivial content: random bytes, a zero MiB, a repeating pattern."""
    rnd = random.Random(seed)
    third = size // 3
    data = (rnd.randbytes(third) + bytes(min(MiB, third))
            + b"glance_rbd_tracked demo " * (size // 24 + 1))
    return data[:size]


def sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def status_of(call) -> int:
    """HTTP status of a glanceclient call that may raise an HTTP error."""
    try:
        resp = call()
    except glance_exc.HTTPException as exc:
        return exc.code
    if isinstance(resp, tuple):  # (resp, body) from http_client
        resp = resp[0]
    return resp.status_code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=5 * MiB + 12345,
                        help="image size in bytes (default 5 MiB + 12345)")
    parser.add_argument("--no-locations", action="store_true",
                        help="skip the POST /v2/images/{id}/locations part")
    args = parser.parse_args()
    missing = [v for v in ("CEPH_CONF", "OS_IMAGE_URL") if not os.environ.get(v)]
    if missing:
        print(f"demo: set {' and '.join(missing)}: eval \"$(tools/ceph-dev-cluster "
              "up)\"; eval \"$(tools/glance-api-dev up)\"", file=sys.stderr)
        return 2
    if args.size < 3:
        parser.error("--size must be at least 3")
    endpoint = os.environ["OS_IMAGE_URL"]
    token = os.environ.get("OS_AUTH_TOKEN", "loopback-noauth")
    ceph_conf = os.environ["CEPH_CONF"]
    print(f"glance-api {endpoint}, cluster {ceph_conf}", flush=True)

    glance = glance_client(endpoint, token)
    nova = glance_client(endpoint, token, as_nova=True)
    ceph = Side(ceph_conf)
    cluster = ceph_mod.connect(ceph_conf)
    created: list[str] = []   # glance image ids
    clones: list[str] = []    # pool/name
    step = Steps()
    try:
        run(args, step, glance, nova, ceph, cluster, created, clones)
    except AssertionError as exc:
        print(f"demo: CHECK FAILED: {exc}", file=sys.stderr)
        cleanup(glance, ceph, cluster, created, clones)
        return 1
    except Exception:
        import traceback
        traceback.print_exc()
        cleanup(glance, ceph, cluster, created, clones)
        return 1
    finally:
        cluster.close()
        ceph.close()
    print(f"demo: all checks passed ({step.number} steps, "
          f"{step.total_ms:.0f} ms)", flush=True)
    return 0


def conf_fsid(path: str) -> str | None:
    """The fsid line of a ceph.conf, if any."""
    with open(path) as conf:
        for line in conf:
            key, _, value = line.partition("=")
            if key.strip().replace("_", " ") == "fsid":
                return value.strip()
    return None


def run(args, step, glance, nova, ceph, cluster, created, clones) -> None:
    fsid = ceph.fsid()
    check(fsid.strip("0-") != "", f"librados reports the fsid {fsid}")
    in_conf = conf_fsid(os.environ["CEPH_CONF"])
    check(in_conf in (None, fsid), f"librados fsid {fsid} != ceph.conf {in_conf}")
    data = image_bytes(args.size, seed=20240521)
    name = f"grt-demo-{uuid.uuid4().hex[:8]}"

    with step("create image (POST /v2/images)") as note:
        image = glance.images.create(name=name, disk_format="raw",
                                     container_format="bare")
        image_id = image["id"]
        created.append(image_id)
        check(image["status"] == "queued", f"status {image['status']}")
        note.append(f"id {image_id}, status queued")

    with step("upload (PUT /v2/images/{id}/file)") as note:
        glance.images.upload(image_id, io.BytesIO(data), image_size=len(data))
        image = glance.images.get(image_id)
        check(image["status"] == "active", f"status {image['status']}")
        check(image["size"] == len(data),
              f"size {image['size']} != {len(data)}")
        check(image["checksum"] == hashlib.md5(data).hexdigest(),
              "checksum (md5) differs from the uploaded bytes")
        check(image.get("os_hash_algo") == "sha512"
              and image.get("os_hash_value") == sha512(data),
              "os_hash_value differs from the uploaded bytes' sha512")
        note.append(f"{len(data)} bytes, active, md5 and sha512 match,"
                    f" stores={image.get('stores')}")

    expected = f"rbd://{fsid}/{POOL}/{image_id}/{SNAP}"
    with step("direct_url") as note:
        direct_url = image.get("direct_url")
        check(direct_url is not None, "no direct_url (show_image_direct_url?)")
        parsed = urllib.parse.urlparse(direct_url)
        url_fsid = parsed.netloc
        check(url_fsid == fsid,
              f"fsid in direct_url {url_fsid!r} != cluster fsid {fsid!r}")
        check(direct_url == expected, f"{direct_url} != {expected}")
        snaps = ceph.snapshots(POOL, image_id)
        check(snaps == [(SNAP, True)], f"snapshots (name, protected): {snaps}")
        note.append(f"{direct_url} (fsid == cluster fsid {fsid}"
                    f"{' == ceph.conf fsid' if in_conf else ''}: OK;"
                    f" {POOL}/{image_id}@{SNAP} protected)")

    with step("download (GET /v2/images/{id}/file)") as note:
        body = glance.images.data(image_id)
        got = b"".join(body)
        check(len(got) == len(data), f"{len(got)} bytes, expected {len(data)}")
        check(got == data, "downloaded bytes differ from the uploaded bytes")
        note.append(f"{len(got)} bytes, identical")

    clone = f"{image_id}_disk"
    with step("clone into vms (as Nova)") as note:
        ceph.clone(POOL, image_id, SNAP, CLONE_POOL, clone)
        clones.append(f"{CLONE_POOL}/{clone}")
        parent = ceph.parent_of(CLONE_POOL, clone)
        check(parent == f"{POOL}/{image_id}@{SNAP}", f"parent {parent}")
        note.append(f"{CLONE_POOL}/{clone} <- {parent}")

    retired = image_id + RETIRED_SUFFIX
    with step("delete image (DELETE /v2/images)") as note:
        code = status_of(lambda: glance.http_client.delete(
            f"/v2/images/{image_id}"))
        check(code == 204, f"DELETE answered {code}, expected 204"
              + (" (the clone blocked it)" if code == 409 else ""))
        created.remove(image_id)
        gone = status_of(lambda: glance.http_client.get(
            f"/v2/images/{image_id}"))
        check(gone == 404, f"GET after DELETE answered {gone}, expected 404")
        note.append(f"204 while {CLONE_POOL}/{clone} exists; GET -> 404")

    with step("RBD image retired") as note:
        names = ceph.names(POOL)
        check(image_id not in names, f"{POOL}/{image_id} still exists")
        check(retired in names, f"{POOL}/{retired} not found")
        parent = ceph.parent_of(CLONE_POOL, clone)
        check(parent == f"{POOL}/{retired}@{SNAP}", f"clone parent {parent}")
        note.append(f"{POOL}/{image_id} -> {POOL}/{retired}; clone parent"
                    f" now {parent}")

    with step("reclaim while the clone exists") as note:
        decision = lifecycle.reclaim(cluster, POOL, retired)
        check(type(decision).__name__ == "Keep", f"decision {decision}")
        check(retired in ceph.names(POOL), f"{POOL}/{retired} vanished")
        note.append(f"Keep ({decision.reason})")

    with step("remove the clone") as note:
        ceph.remove(CLONE_POOL, clone)
        clones.remove(f"{CLONE_POOL}/{clone}")
        note.append(f"{CLONE_POOL}/{clone} removed")

    with step("reclaim") as note:
        decision = lifecycle.reclaim(cluster, POOL, retired)
        check(type(decision).__name__ == "Remove", f"decision {decision}")
        names = ceph.names(POOL)
        check(retired not in names and image_id not in names,
              f"still in {POOL}: {[n for n in names if image_id in n]}")
        note.append(f"{type(decision).__name__}{tuple(decision.snapshots)}:"
                    f" {POOL}/{retired} gone")

    with step("GET /v2/info/stores/detail (info)") as note:
        code = status_of(lambda: glance.http_client.get(
            "/v2/info/stores/detail"))
        # Not a check: glance only knows the properties of its own drivers.
        note.append(f"-> {code}"
                    + (" (glance has no property mapper for 'rbd_tracked')"
                       if code == 500 else ""))

    if args.no_locations:
        return
    chain_flow(args, step, glance, nova, ceph, cluster, created, clones, fsid)


def chain_flow(args, step, glance, nova, ceph, cluster, created, clones,
               fsid) -> None:
    """Nova's instance snapshot kept as a clone chain: no data copied."""
    base_data = image_bytes(max(args.size // 2, 3), seed=7)
    with step("upload a base image") as note:
        base = glance.images.create(name="grt-demo-base", disk_format="raw",
                                    container_format="bare")
        created.append(base["id"])
        glance.images.upload(base["id"], io.BytesIO(base_data),
                             image_size=len(base_data))
        note.append(f"{base['id']}, {len(base_data)} bytes")

    disk = f"{uuid.uuid4()}_disk"
    instance_data = b"written by the instance " * 100
    with step("boot an instance (clone) and write") as note:
        ceph.clone(POOL, base["id"], SNAP, CLONE_POOL, disk)
        clones.append(f"{CLONE_POOL}/{disk}")
        ceph.write(CLONE_POOL, disk, instance_data)
        note.append(f"{CLONE_POOL}/{disk}")
    expected = instance_data + base_data[len(instance_data):]

    with step("create the snapshot image") as note:
        snap_image = glance.images.create(name="grt-demo-instance-snapshot",
                                          disk_format="raw",
                                          container_format="bare")
        snap_id = snap_image["id"]
        created.append(snap_id)
        note.append(snap_id)

    with step("snapshot the disk as a clone chain") as note:
        (made,) = chains.snapshot(cluster, [chains.Request(
            f"{CLONE_POOL}/{disk}", snap_id)], core.Policy(pool=POOL))
        check(made.path == "chain", f"path {made.path} ({made.fallbacks})")
        check(made.location == f"rbd://{fsid}/{POOL}/{snap_id}/{SNAP}",
              f"location {made.location}")
        note.append(f"{made.location}, path {made.path}, depth {made.depth},"
                    f" {made.seconds * 1000:.0f} ms, nothing copied")

    with step("POST /v2/images/{id}/locations") as note:
        method = register_location(glance, nova, snap_id, made.location,
                                   sha512(expected))
        snap_image = wait_active(glance, snap_id)
        tasks = glance.images.get_associated_image_tasks(snap_id)["tasks"]
        check(all(t["status"] == "success" for t in tasks),
              f"tasks {[(t['type'], t['status']) for t in tasks]}")
        check(snap_image.get("direct_url") == made.location,
              f"direct_url {snap_image.get('direct_url')}")
        note.append(f"{method} as role service, validation data sha512;"
                    " active")

    with step("download the snapshot image") as note:
        got = b"".join(glance.images.data(snap_id))
        check(got == expected, "the snapshot's bytes differ from the disk's")
        note.append(f"{len(got)} bytes, identical to the disk at snapshot")

    with step("delete the base image (instance runs)") as note:
        code = status_of(lambda: glance.http_client.delete(
            f"/v2/images/{base['id']}"))
        check(code == 204, f"DELETE answered {code}, expected 204")
        created.remove(base["id"])
        check(base["id"] + RETIRED_SUFFIX in ceph.names(POOL), "not retired")
        note.append("204; base retired, the instance disk still reads it")

    with step("destroy the instance (retire disk)") as note:
        decision = lifecycle.retire(cluster, CLONE_POOL, disk,
                                    core.Policy(pool=POOL))
        check(type(decision).__name__ == "Retire", f"decision {decision}")
        clones.remove(f"{CLONE_POOL}/{disk}")
        note.append(f"{CLONE_POOL}/{disk}{RETIRED_SUFFIX}: the snapshot "
                    "image depends on it")

    with step("delete the snapshot image") as note:
        code = status_of(lambda: glance.http_client.delete(
            f"/v2/images/{snap_id}"))
        check(code == 204, f"DELETE answered {code}, expected 204")
        created.remove(snap_id)
        left = [n for n in ceph.names(POOL) if n.startswith((snap_id,
                                                              base["id"]))]
        left += [n for n in ceph.names(CLONE_POOL) if n.startswith(disk)]
        check(not left, f"still there: {left}")
        note.append("204; chain, retired disk and retired base all reclaimed")


def cleanup(glance, ceph, cluster, created, clones) -> None:
    """Best effort: undo what a failed run left behind."""
    for spec in clones:
        pool, name = spec.split("/", 1)
        with contextlib.suppress(Exception):
            ceph.remove(pool, name)
            print(f"demo: cleanup: removed {spec}", file=sys.stderr)
    for image_id in created:
        with contextlib.suppress(Exception):
            glance.images.delete(image_id)
            print(f"demo: cleanup: deleted image {image_id}", file=sys.stderr)
    with contextlib.suppress(Exception):
        names = ceph.names(POOL)
        for image_id in created:
            if image_id + RETIRED_SUFFIX in names:
                lifecycle.reclaim(cluster, POOL, image_id + RETIRED_SUFFIX)
        left = sorted(n for n in ceph.names(POOL)
                      if any(n.startswith(i) for i in created))
        if left:
            print(f"demo: cleanup: left in {POOL}: {left}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
