"""Many threads of one process open images through the store's adapter as
a busy glance-api does, for a while, under faulthandler.

    python -m tests.functional.open_close_worker CEPH_CONF NAME SECONDS THREADS

Used by test_open_close.py.  librbd 16.2 frees an image under one of its
own threads when it is closed right after its open, with no I/O between
(doc/source/known-issues.rst): this process then dies of SIGSEGV or
SIGABRT, or hangs, instead of printing its counts.  Every shape the store
had of that is here: a snapshot's size (each download and get_size), an
empty read, the parent of a head, an image read by id.  NAME is an image
of pool ``images`` with a snapshot ``snap`` of 1 MiB.
"""

import faulthandler
import json
import sys
import threading
import time

from glance_rbd_tracked import ceph as ceph_mod


def main(conf, name, seconds, threads):
    faulthandler.enable(all_threads=True)
    cluster = ceph_mod.connect(conf)
    image_id = cluster.images.state("images", name).image_id
    counts = {"size": 0, "empty read": 0, "parent": 0, "by id": 0}
    stop = time.monotonic() + float(seconds)

    def snapshot_reads():
        # each download did this twice: a size, then a read
        while time.monotonic() < stop:
            assert cluster.data.size("images", name, "snap") == 1 << 20
            counts["size"] += 1
            assert not list(cluster.data.read("images", name, "snap",
                                              offset=1 << 20))
            counts["empty read"] += 1

    def head_reads():
        while time.monotonic() < stop:
            assert cluster.images.parent("images", name) is None
            counts["parent"] += 1
            assert cluster.images.by_id("images", image_id).name == name
            counts["by id"] += 1

    threads = int(threads)
    work = [snapshot_reads] * (threads - threads // 4) + \
        [head_reads] * (threads // 4)
    workers = [threading.Thread(target=w) for w in work]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    handles = cluster.connection.handles
    parked = handles.open_count()
    cluster.close()
    print(json.dumps({"counts": counts, "open before the close": parked,
                      "open at the end": handles.open_count()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
