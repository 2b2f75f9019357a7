"""A second glance-api worker or a Nova host, racing the test process.

    python -m tests.functional.race_worker CEPH_CONF START delete ID [ID ...]
    python -m tests.functional.race_worker CEPH_CONF START clone ID CHILD FMT

Waits until the wall clock reaches START so that workers begin together.
Prints one JSON line with what happened.
"""

import json
import sys
import time

import rados
import rbd

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle


def main(conf, start, op, *args):
    import faulthandler
    faulthandler.dump_traceback_later(25, exit=True)
    cluster = ceph_mod.connect(conf)
    cluster.fsid()  # connect before the start line
    time.sleep(max(0.0, float(start) - time.time()))
    out = {"op": op, "done": [], "errors": []}
    if op == "delete":
        for image_id in args:
            try:
                decision = lifecycle.delete(cluster, "images", image_id,
                                            core.Policy(pool="images"))
                out["done"].append([image_id, type(decision).__name__])
            except errors.TrackedError as exc:
                out["errors"].append([image_id, str(exc)])
    else:
        image_id, child, fmt = args
        client = rados.Rados(conffile=conf,
                             conf={"rbd_default_clone_format": fmt})
        client.connect()
        try:
            src = client.open_ioctx("images")
            dst = client.open_ioctx("vms")
            rbd.RBD().clone(src, image_id, "snap", dst, child)
            out["done"].append([child, "cloned"])
        except rbd.Error as exc:
            out["errors"].append([child, f"{type(exc).__name__}: {exc}"])
        finally:
            client.shutdown()
    cluster.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
