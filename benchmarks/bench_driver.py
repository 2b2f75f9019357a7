"""Side-by-side figures: this driver against glance_store's stock rbd driver.

Runs on the cluster named by $CEPH_CONF (``tools/bench`` starts one), in one
process, alternating the two drivers so that machine noise hits both alike.
Prints medians with the spread (min..max) of every figure and the ratios the
foundation issue sets as targets.  Nothing here asserts a time.

    python benchmarks/bench_driver.py [--size-mib 512] [--runs 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import time
import uuid

from figures import paxos_interval
from figures import spread
from glance_store import location as gs_location
from glance_store import multi_backend
from oslo_config import cfg

MiB = 1 << 20


class Unsized(io.RawIOBase):
    """A stream whose length the reader does not know (chunked upload)."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n < 0 else min(self._pos + n, len(self._view))
        chunk = bytes(self._view[self._pos:end])
        self._pos = end
        return chunk


def stores(conf_path: str) -> None:
    """Load both drivers the way glance-api does, from a config file."""
    path = f"/tmp/bench-glance-{os.getpid()}.conf"
    with open(path, "w") as f:
        f.write("[DEFAULT]\nenabled_backends = fast:rbd_tracked, stock:rbd\n"
                "[glance_store]\ndefault_backend = fast\n")
        for group in ("fast", "stock"):
            f.write(f"[{group}]\nrbd_store_ceph_conf = {conf_path}\n"
                    "rbd_store_pool = images\n")
    conf = cfg.CONF
    # glance-api registers this one itself (glance.common.config).
    conf.register_opt(cfg.DictOpt("enabled_backends"))
    conf([], project="bench", default_config_files=[path])
    multi_backend.register_store_opts(
        conf, reserved_stores={"os_glance_staging_store": "file"})
    conf.set_override("filesystem_store_datadir", "/tmp",
                      group="os_glance_staging_store")
    multi_backend.create_multi_stores(
        conf, reserved_stores={"os_glance_staging_store": "file"})


def fetch(name: str):
    """The store as glance-api gets it for every request."""
    return multi_backend.get_store_from_store_identifier(name)


def location(store, uri: str, backend: str):
    return gs_location.Location(
        "rbd", store.get_store_location_class(), store.conf, uri=uri,
        backend=backend)


def bench_add(data: bytes, runs: int) -> dict:
    results: dict = {}
    for _ in range(runs):
        for backend in ("stock", "fast"):
            for kind in ("known", "unknown"):
                store = fetch(backend)
                image_id = str(uuid.uuid4())
                stream = io.BytesIO(data) if kind == "known" else Unsized(data)
                size = len(data) if kind == "known" else 0
                start = time.perf_counter()
                uri, written, *_ = store.add(image_id, stream, size, "sha512")
                elapsed = time.perf_counter() - start
                assert written == len(data)
                results.setdefault((backend, kind), []).append(
                    len(data) / MiB / elapsed)
                fetch(backend).delete(location(store, uri, backend))
    return results


def bench_get(data: bytes, runs: int) -> dict:
    store = fetch("fast")
    uri, *_ = store.add(str(uuid.uuid4()), io.BytesIO(data), len(data),
                        "sha512")
    results: dict = {}
    try:
        for _ in range(runs):
            for backend in ("stock", "fast"):
                s = fetch(backend)
                start = time.perf_counter()
                chunks, size = s.get(location(s, uri, backend))
                total = sum(len(c) for c in chunks)
                elapsed = time.perf_counter() - start
                assert total == size == len(data)
                results.setdefault(backend, []).append(total / MiB / elapsed)
    finally:
        fetch("fast").delete(location(store, uri, "fast"))
    return results


def bench_get_size(requests: int, runs: int) -> dict:
    store = fetch("fast")
    uri, *_ = store.add(str(uuid.uuid4()), io.BytesIO(b"z" * MiB), MiB,
                        "sha512")
    results: dict = {}
    try:
        for _ in range(runs):
            for backend in ("stock", "fast"):
                start = time.perf_counter()
                for _ in range(requests):
                    s = fetch(backend)
                    assert s.get_size(location(s, uri, backend)) == MiB
                elapsed = time.perf_counter() - start
                results.setdefault(backend, []).append(
                    1000 * elapsed / requests)
    finally:
        fetch("fast").delete(location(store, uri, "fast"))
    return results


def rbd_bench(size_mib: int, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        name = f"bench-{uuid.uuid4().hex[:8]}"
        subprocess.run(["rbd", "create", "--size", f"{size_mib}M",
                        f"images/{name}"], check=True)
        try:
            start = time.perf_counter()
            subprocess.run(["rbd", "bench", "--io-type", "write",
                            "--io-size", "8M", "--io-threads", "4",
                            "--io-total", f"{size_mib}M",
                            "--io-pattern", "seq", f"images/{name}"],
                           check=True, capture_output=True)
            out.append(size_mib / (time.perf_counter() - start))
        finally:
            subprocess.run(["rbd", "rm", "--no-progress", f"images/{name}"],
                           check=True, capture_output=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    stores(os.environ["CEPH_CONF"])
    data = os.urandom(args.size_mib * MiB)

    print(f"# cluster: {os.environ['CEPH_CONF']}, paxos_propose_interval "
          f"{paxos_interval()} s, {os.cpu_count()} cores; {args.runs} runs "
          f"of {args.size_mib} MiB, hashing md5 + sha512")
    reference = rbd_bench(args.size_mib, args.runs)
    print(f"rbd bench write (8M x4)    MiB/s {spread(reference)}")
    adds = bench_add(data, args.runs)
    for (backend, kind), values in sorted(adds.items()):
        print(f"add {backend:5} {kind:7} size  MiB/s {spread(values)}")
    gets = bench_get(data, args.runs)
    for backend, values in sorted(gets.items()):
        print(f"get {backend:5}             MiB/s {spread(values)}")
    sizes = bench_get_size(args.requests, args.runs)
    for backend, values in sorted(sizes.items()):
        print(f"get_size {backend:5} ms/request {spread(values)}")

    med = {k: statistics.median(v) for k, v in adds.items()}
    ratios = {
        "add_known_vs_stock": med[("fast", "known")] / med[("stock", "known")],
        "add_unknown_vs_stock":
            med[("fast", "unknown")] / med[("stock", "unknown")],
        "add_unknown_vs_known":
            med[("fast", "unknown")] / med[("fast", "known")],
        "get_vs_stock":
            statistics.median(gets["fast"]) / statistics.median(gets["stock"]),
        "get_size_speedup":
            statistics.median(sizes["stock"]) / statistics.median(sizes["fast"]),
        "add_known_vs_rbd_bench":
            med[("fast", "known")] / statistics.median(reference),
    }
    targets = {"add_known_vs_stock": 1.5, "add_unknown_vs_known": 0.95,
               "get_vs_stock": 1.0, "get_size_speedup": 3.0}
    for name, value in ratios.items():
        target = targets.get(name)
        verdict = "" if target is None else (
            f"  target >= {target}: {'met' if value >= target else 'MISSED'}")
        print(f"ratio {name:24} {value:6.2f}{verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"add": {f"{b}/{k}": v for (b, k), v in adds.items()},
                       "get": gets, "get_size_ms": sizes,
                       "rbd_bench": reference, "ratios": ratios}, f, indent=2)


if __name__ == "__main__":
    main()
