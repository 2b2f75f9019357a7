"""One service of the cloud, at one release of the store: a worker process.

Run with the python of the release to play (the previous release's
virtualenv, or the one of the tree under test):

    python tests/upgrade/role.py CEPH_CONF ROLE POOLS_JSON

(``POOLS_JSON``: ``{"images": ..., "vms": ..., "volumes": ...}``, the pools
of Glance, Nova and Cinder.)

It reads one JSON request a line on stdin and answers each with one JSON
line on stdout: ``{"ok": true, "result": ...}``, or ``{"ok": false,
"error": "<class>", "message": ...}`` when the store raised.  The roles call
the store as the services do: ``glance`` through the glance_store driver
(``add``, ``get``, ``delete``, as glance-api does), ``nova`` and ``cinder``
through the library (``chains.snapshot``, ``lifecycle.retire``, as the
integrations do), ``operator`` through the command's ``main``.  It imports
only the store and what the store needs, never ``tests``: the previous
release's venv has no tests package, and the tree's code must not leak into
it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import signal
import sys
import traceback
from typing import Any


def pattern(seed: str, size: int) -> bytes:
    """The bytes written for ``seed``: every side can say what they were."""
    block = hashlib.sha256(seed.encode()).digest() * 128  # 4 KiB
    return (block * (size // len(block) + 1))[:size]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Glance:
    """glance-api: the driver, configured as tests/functional make_store."""

    def __init__(self, ceph_conf: str, pools: dict[str, str]) -> None:
        from glance_store import location
        from oslo_config import cfg

        from glance_rbd_tracked import driver

        conf = cfg.ConfigOpts()
        conf([], project="glance-rbd-tracked-upgrade", default_config_files=[])
        self.store = driver.Store(conf)
        conf.set_override("rbd_store_ceph_conf", ceph_conf,
                          group="glance_store")
        conf.set_override("rbd_store_pool", pools["images"],
                          group="glance_store")
        conf.set_override("rbd_tracked_chain_pools",
                          [pools["vms"], pools["volumes"]],
                          group="glance_store")
        self.store.configure(re_raise_bsc=True)
        self._location = location
        self._store_location = driver.StoreLocation

    def _loc(self, uri: str) -> Any:
        return self._location.Location("rbd_tracked", self._store_location,
                                       self.store.conf, uri=uri)

    def add(self, image_id: str, seed: str, size: int) -> dict[str, Any]:
        data = pattern(seed, size)
        uri, written, *_ = self.store.add(image_id, io.BytesIO(data), size,
                                          "sha512")
        return {"location": uri, "size": written}

    def get(self, location: str) -> dict[str, Any]:
        chunks, size = self.store.get(self._loc(location))
        data = b"".join(chunks)
        return {"size": size, "sha256": digest(data)}

    def delete(self, location: str) -> None:
        self.store.delete(self._loc(location))


class Service:
    """nova-compute or cinder-volume: the library, as the integrations."""

    def __init__(self, ceph_conf: str, pools: dict[str, str]) -> None:
        from glance_rbd_tracked import ceph

        self.backend = ceph.shared(ceph_conf, None)
        self.pools = pools

    def _policy(self) -> Any:
        from glance_rbd_tracked import core

        return core.Policy(pool=self.pools["images"],
                           chain_pools=frozenset((self.pools["vms"],
                                                  self.pools["volumes"])))

    def snapshot(self, source: str, image_id: str) -> dict[str, Any]:
        from glance_rbd_tracked import chains

        (made,) = chains.snapshot(self.backend,
                                  [chains.Request(source, image_id)],
                                  self._policy(), paths=(chains.Path.CHAIN,))
        return {"location": made.location, "path": str(made.path)}

    def retire(self, pool: str, name: str) -> dict[str, Any]:
        from glance_rbd_tracked import lifecycle

        decision = lifecycle.retire(self.backend, pool, name, self._policy())
        return {"decision": type(decision).__name__}


class Restarted(Service):
    """nova-compute, cinder-volume or glance-api killed (SIGKILL) at a step
    of its work, as a restart during an upgrade may: ``die_at`` names the
    step (``on_step``; a trailing ``*`` matches a prefix).  Its lock lease
    is short, as test_crash's worker's, so that the test need not wait for
    it to lapse."""

    def __init__(self, ceph_conf: str, pools: dict[str, str]) -> None:
        from glance_rbd_tracked import ceph

        self.backend = ceph.connect(ceph_conf, lease=ceph.Terms(seconds=2))
        self.pools = pools

    def _dies_at(self, die_at: str) -> Any:
        def step(name: str) -> None:
            if name == die_at or (die_at.endswith("*")
                                  and name.startswith(die_at[:-1])):
                sys.stderr.write(f"killed at {name}\n")
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return step

    def snapshot_dying(self, source: str, image_id: str, die_at: str) -> None:
        from glance_rbd_tracked import chains

        chains.snapshot(self.backend, [chains.Request(source, image_id)],
                        self._policy(), paths=(chains.Path.CHAIN,),
                        on_step=self._dies_at(die_at))

    def delete_dying(self, name: str, die_at: str) -> None:
        """What the driver's delete does (the image and the snapshot its
        location names)."""
        from glance_rbd_tracked import lifecycle

        lifecycle.delete(self.backend, self.pools["images"], name,
                         self._policy(), snapshot="snap",
                         on_step=self._dies_at(die_at))


class Operator:
    """The operator: ``glance-rbd-tracked`` (its ``main``, as the console
    script calls it), with glance-api's configuration file."""

    def __init__(self, ceph_conf: str, pools: dict[str, str]) -> None:
        self.ceph_conf = ceph_conf

    def run(self, argv: list[str]) -> dict[str, Any]:
        from glance_rbd_tracked import cli

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
        sys.stderr.write(err.getvalue())
        return {"exit": code, "stdout": out.getvalue(),
                "stderr": err.getvalue()}


ROLES = {"glance": Glance, "nova": Service, "cinder": Service,
         "operator": Operator, "restarted": Restarted}


def serve(handler: Any, lines: Any, out: Any) -> None:
    for line in lines:
        request = json.loads(line)
        op = request.pop("op")
        try:
            result = getattr(handler, op)(**request)
            answer = {"ok": True, "result": result}
        except Exception as exc:  # the test says which, and fails
            traceback.print_exc()
            answer = {"ok": False,
                      "error": f"{type(exc).__module__}.{type(exc).__name__}",
                      "message": str(exc)}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def main(argv: list[str]) -> int:
    ceph_conf, role, pools = argv[0], argv[1], json.loads(argv[2])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"{role} %(levelname)s %(name)s: %(message)s")
    import glance_rbd_tracked

    handler = ROLES[role](ceph_conf, pools)
    # the first line says who answers: the test checks it is the release
    # it meant to run
    sys.stdout.write(json.dumps({"version": glance_rbd_tracked.__version__,
                                 "file": glance_rbd_tracked.__file__}) + "\n")
    sys.stdout.flush()
    serve(handler, sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
