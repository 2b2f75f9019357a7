"""Run one store operation and SIGKILL this process at a named step.

    python -m tests.functional.crash_worker CEPH_CONF STEP snapshot DISK ID
    python -m tests.functional.crash_worker CEPH_CONF STEP delete ID
    python -m tests.functional.crash_worker CEPH_CONF STEP retire POOL NAME
    python -m tests.functional.crash_worker CEPH_CONF - retire-slowly POOL NAME
    python -m tests.functional.crash_worker CEPH_CONF chunk-N upload ID

Used by test_crash.py: the kill lands between two steps, as a power cut or
an OOM kill would.  ``retire-slowly`` removes one object at a time, for the
test to kill it from outside while librbd is in the middle of a removal.
"""

import os
import signal
import subprocess
import sys

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import chains
from glance_rbd_tracked import core
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import uploads


def run(ceph_conf, *args):
    """Run this worker in a child process (for a test): its result."""
    return subprocess.run([sys.executable, "-m",
                           "tests.functional.crash_worker", ceph_conf, *args],
                          capture_output=True, text=True, timeout=120)


def main(conf, kill_at, op, *args):
    # the killed worker's lock lease ends soon, and the test need not wait
    slow = {"rbd_concurrent_management_ops": "1"}
    cluster = ceph_mod.connect(
        conf, conf=slow if op == "retire-slowly" else None,
        lease=ceph_mod.Terms(seconds=2))
    policy = core.Policy(pool="images")
    seen = []

    def step(name):
        seen.append(name)
        if name == kill_at or (kill_at.endswith("*")
                               and name.startswith(kill_at[:-1])):
            sys.stdout.write("killed at " + name + "\n")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    if op == "snapshot":
        disk, image_id = args
        chains.snapshot(cluster, [chains.Request(disk, image_id)], policy,
                        on_step=step)
    elif op in ("retire", "retire-slowly"):
        pool, name = args
        lifecycle.retire(cluster, pool, name, policy, on_step=step)
    elif op == "upload":  # killed once the N-th 4 MiB chunk is written
        (image_id,) = args
        chunks = (bytes([n]) * (4 << 20) for n in range(16))
        written = iter(range(1, 17))
        uploads.upload(cluster, policy, image_id, chunks, size=64 << 20,
                       order=22, on_chunk=lambda c: step(
                           f"chunk-{next(written)}"))
    else:
        (image_id,) = args
        lifecycle.delete(cluster, "images", image_id, policy, on_step=step)
    print("finished; steps: " + ",".join(seen))
    cluster.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
