"""Mixed glance-api traffic for the soak benchmark: locust runs this file
(``benchmarks/bench_soak.py`` starts it headless; ``--soak-*`` options are
its settings).

Each user is a tenant that keeps up to ``KEEP`` images of its own and reads
those and a few images shared by all users:

* uploads of known size (``Content-Length``) and unknown size (chunked),
  sizes not a multiple of 4 KiB; the bytes are known, so every download is
  checked whole (MD5 of what arrived) and every ranged read byte for byte:
  a store that served zeros or the wrong offset is a ``wrong data`` error;
* full and ranged downloads (``Range: bytes=A-B``, 206), image shows with
  their size (``GET /v2/images/{id}``);
* deletes of images that have a clone: a Nova-style clone of the image's
  snapshot with plain ``rbd``, then ``DELETE``: ``rbd_tracked`` answers 204.
  The stock ``rbd`` driver's expected answers: 409 with format-1 clones
  (the clone then goes, and a second ``DELETE`` gives 204), or, with
  format-2 clones, 204 after it moved the image to the RBD trash, where
  nothing removes it (the benchmark counts it as left over);
* the stock driver's expected answer to a ranged read is 400 (glance_store:
  "Getting images randomly from this store is not supported");
* ``rbd_tracked`` only: chain snapshots of a disk (``rbd import``)
  registered through the API with ``glance-rbd-tracked snapshot --register
  --execute``, downloaded once Glance has hashed them, deleted, the disk
  removed; and ``glance-rbd-tracked cleanup --execute`` every
  ``--soak-cleanup-every`` seconds, as cron would.

Every failure is named ``KIND: detail`` (``HTTP 500``, ``disconnected``,
``timeout``, ``wrong data``, ``rbd``, ``cli``...): the benchmark counts
errors by that kind.  The ``rbd`` and CLI steps run as subprocesses, which
gevent waits for without blocking the other users.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from typing import Any
import uuid

import gevent
from gevent.lock import Semaphore
from locust import HttpUser
from locust import between
from locust import events
from locust import task
import requests

MiB = 1 << 20
#: name prefix of everything the load makes (images' names, disks in vms)
PREFIX = "soak-"
#: images a user keeps for reading; older ones are deleted
KEEP = 2
#: images all users read (made by the first reader)
SHARED = 2
TIMEOUT = 300  # seconds without a byte sent or read: then it is an error
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the keystoneauth plugin for tools/glance-api-dev's loopback glance-api
IDENTITY = os.path.join(ROOT, "tests", "e2e", "openstack", "identity")
OCTETS = {"Content-Type": "application/octet-stream"}


class SoakError(Exception):
    """A failed step, its message ``KIND: detail``."""


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("soak (benchmarks/soak_locustfile.py)")
    group.add_argument("--soak-driver", choices=("rbd_tracked", "rbd"),
                       default="rbd_tracked",
                       help="the store driver glance-api runs (rbd: no "
                            "chain snapshots, no cleanup, 409 expected)")
    group.add_argument("--soak-size-mib", type=float, default=4,
                       help="image size (plus up to 4 KiB)")
    group.add_argument("--soak-ceph-conf",
                       default=os.environ.get("CEPH_CONF", ""))
    group.add_argument("--soak-glance-conf", default="",
                       help="glance-api.conf, which glance-rbd-tracked reads")
    group.add_argument("--soak-clouds", default="",
                       help="clouds.yaml with a cloud 'soak' (service "
                            "role) for snapshot --register")
    group.add_argument("--soak-cleanup-every", type=float, default=30,
                       help="seconds between cleanup --execute runs "
                            "(0: none)")


def options() -> Any:
    return _env.parsed_options


_env: Any = None


@events.init.add_listener
def _init(environment: Any, **_: Any) -> None:
    global _env
    _env = environment
    if environment.parsed_options.soak_driver != "rbd_tracked":
        GlanceUser.tasks = [t for t in GlanceUser.tasks
                            if getattr(t, "__name__", "") != "chain_snapshot"]


# ---------------------------------------------------------------- data

@dataclasses.dataclass
class Image:
    id: str
    data: bytes
    md5: str


def payload(seed: str, size: int) -> bytes:
    """``size`` bytes, each 4 KiB block its own (seed, index), so a block
    served from the wrong offset, or zeros, never matches."""
    blocks = [hashlib.sha512(f"{seed}:{i}".encode()).digest() * 64
              for i in range((size + 4095) // 4096)]
    return b"".join(blocks)[:size]


def new_data() -> tuple[str, bytes]:
    seed = str(uuid.uuid4())
    size = int(options().soak_size_mib * MiB) + random.randrange(1, 4096)
    return seed, payload(seed, size)


def error_kind(exc: BaseException | None) -> str:
    """``KIND: detail`` of an exception of requests (no response)."""
    text = repr(exc)
    for needle, kind in (("RemoteDisconnected", "disconnected"),
                         ("ConnectionResetError", "reset"),
                         ("BrokenPipe", "broken pipe"),
                         ("ConnectionRefused", "refused"),
                         ("Timeout", "timeout")):
        if needle in text:
            return f"{kind}: {text[:200]}"
    return f"{type(exc).__name__}: {text[:200]}"


# ---------------------------------------------------------------- outside glance

def fire(name: str, kind: str, start: float,
         exc: BaseException | None) -> None:
    """A step that is not an HTTP request, in locust's statistics."""
    _env.events.request.fire(
        request_type=kind, name=name,
        response_time=(time.perf_counter() - start) * 1000,
        response_length=0, exception=exc, context={})


def run(name: str, kind: str, argv: list[str], data: bytes | None = None,
        env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)
        ) -> subprocess.CompletedProcess[bytes]:
    """Run a command as one timed step; a failure raises SoakError."""
    start, exc = time.perf_counter(), None
    try:
        res = subprocess.run(argv, input=data, capture_output=True,
                             timeout=600, env=env)
        if res.returncode not in ok:
            last = (res.stderr.decode(errors="replace").strip().splitlines()
                    or ["(no stderr)"])[-1]
            raise SoakError(f"{kind}: {argv[1] if kind == 'rbd' else name}"
                            f" exit {res.returncode}: {last[:300]}")
        return res
    except subprocess.TimeoutExpired as err:
        exc = SoakError(f"timeout: {name}: {err}")
        raise exc from None
    except SoakError as err:
        exc = err
        raise
    finally:
        fire(name, kind, start, exc)


def rbd(name: str, *args: str, data: bytes | None = None) -> None:
    run(name, "rbd", ["rbd", "-c", options().soak_ceph_conf, *args], data)


def cli_env() -> dict[str, str]:
    return dict(os.environ, OS_CLIENT_CONFIG_FILE=options().soak_clouds,
                PYTHONPATH=IDENTITY)


def cli(name: str, *args: str, ok: tuple[int, ...] = (0,)
        ) -> subprocess.CompletedProcess[bytes]:
    """glance-rbd-tracked with glance-api's own configuration."""
    exe = os.path.join(os.path.dirname(sys.executable), "glance-rbd-tracked")
    return run(name, "cli", [exe, "--config-file", options().soak_glance_conf,
                             "--backend", "fast", *args], env=cli_env(), ok=ok)


def cron(every: float) -> None:
    """``cleanup --execute`` every ``every`` seconds, as cron runs it."""
    while True:
        gevent.sleep(every)
        with contextlib.suppress(SoakError):  # counted by run()
            cli("cleanup --execute (cron)", "cleanup", "--execute",
                "--format", "json")


_cron: list[Any] = []


@events.test_start.add_listener
def _start(environment: Any, **_: Any) -> None:
    every = environment.parsed_options.soak_cleanup_every
    if environment.parsed_options.soak_driver == "rbd_tracked" and every > 0:
        _cron.append(gevent.spawn(cron, every))


@events.test_stop.add_listener
def _stop(environment: Any, **_: Any) -> None:
    for greenlet in _cron:
        greenlet.kill()
    # the shared images: every user has stopped
    for image in list(_shared):
        response = requests.delete(
            f"{environment.host}/v2/images/{image.id}", timeout=TIMEOUT)
        if response.status_code == 204:
            _shared.remove(image)


_shared: list[Image] = []
_shared_lock = Semaphore()


# ---------------------------------------------------------------- the user

class GlanceUser(HttpUser):
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        self.images: list[Image] = []

    def on_stop(self) -> None:
        while self.images:
            self.delete(self.images.pop())

    # -- one request, checked

    def call(self, name: str, method: str, path: str,
             expect: tuple[int, ...], check: Any = None,
             **kwargs: Any) -> Any:
        """One request; a status outside ``expect``, no response or a
        failed ``check(response)`` (which returns what is wrong, or
        None) is a failure of kind ``HTTP nnn``, of the exception's kind,
        or the check's.  Returns the response, or None on failure."""
        with self.client.request(method, path, name=name, timeout=TIMEOUT,
                                 catch_response=True, **kwargs) as response:
            if response.status_code == 0:
                response.failure(error_kind(response.error))
                return None
            if response.status_code not in expect:
                response.failure(f"HTTP {response.status_code}: "
                                 f"{response.text[:200]!r}")
                return None
            wrong = check(response) if check else None
            if wrong:
                response.failure(wrong)
                return None
            response.success()
            return response

    # -- the images

    def upload(self, chunked: bool) -> Image | None:
        seed, data = new_data()
        made = self.call("create (POST /v2/images)", "POST", "/v2/images",
                         (201,), json={"name": PREFIX + seed,
                                       "disk_format": "raw",
                                       "container_format": "bare"})
        if made is None:
            return None
        image_id = made.json()["id"]
        body: Any = data
        if chunked:
            body = (data[i:i + MiB] for i in range(0, len(data), MiB))
        name = "upload (chunked)" if chunked else "upload (Content-Length)"
        if self.call(name, "PUT", f"/v2/images/{image_id}/file", (204,),
                     data=body, headers=OCTETS) is None:
            self.delete(Image(image_id, b"", ""), "delete (failed upload)")
            return None
        return Image(image_id, data, hashlib.md5(data).hexdigest())

    def delete(self, image: Image, name: str = "delete") -> bool:
        return self.call(name, "DELETE", f"/v2/images/{image.id}",
                         (204,)) is not None

    def own(self) -> Image | None:
        if not self.images:
            made = self.upload(chunked=False)
            if made is None:
                return None
            self.images.append(made)
        return random.choice(self.images)

    def readable(self) -> Image | None:
        """An own image or, half the time, one all users read."""
        if random.random() < 0.5:
            with _shared_lock:
                if len(_shared) < SHARED:
                    made = self.upload(chunked=False)
                    if made is not None:
                        _shared.append(made)
                if _shared:
                    return random.choice(_shared)
        return self.own()

    # -- the tasks

    @task(3)
    def upload_known_size(self) -> None:
        self.keep(self.upload(chunked=False))

    @task(2)
    def upload_chunked(self) -> None:
        self.keep(self.upload(chunked=True))

    def keep(self, image: Image | None) -> None:
        if image is None:
            return
        self.images.append(image)
        while len(self.images) > KEEP:
            self.delete(self.images.pop(0))

    @task(4)
    def download(self) -> None:
        image = self.readable()
        if image is None:
            return

        def whole(response: Any) -> str | None:
            body = response.content
            if len(body) != len(image.data):
                return (f"wrong size: {len(body)} bytes, not "
                        f"{len(image.data)}")
            if hashlib.md5(body).hexdigest() != image.md5:
                return "wrong data: the download's MD5 differs"
            return None

        self.call("download", "GET", f"/v2/images/{image.id}/file", (200,),
                  check=whole)

    @task(4)
    def download_range(self) -> None:
        image = self.readable()
        if image is None:
            return
        size = len(image.data)
        first = random.randrange(size)
        # half the ranges run to the end of the image
        last = size - 1 if random.random() < 0.5 else \
            random.randrange(first, min(size, first + 2 * MiB))

        def exact(response: Any) -> str | None:
            if response.content != image.data[first:last + 1]:
                return (f"wrong data: bytes={first}-{last} of {size} gave "
                        f"{len(response.content)} other bytes")
            return None

        tracked = options().soak_driver == "rbd_tracked"
        self.call("download (Range)", "GET", f"/v2/images/{image.id}/file",
                  (206,) if tracked else (400,),
                  check=exact if tracked else None,
                  headers={"Range": f"bytes={first}-{last}"})

    @task(6)
    def show(self) -> None:
        image = self.readable()
        if image is None:
            return

        def shown(response: Any) -> str | None:
            body = response.json()
            if body["status"] != "active" or body["size"] != len(image.data):
                return (f"wrong image: {body['status']}, size "
                        f"{body['size']}, not active, {len(image.data)}")
            return None

        self.call("show (GET /v2/images/{id})", "GET",
                  f"/v2/images/{image.id}", (200,), check=shown)

    @task(2)
    def delete_with_clone(self) -> None:
        """Nova boots from the image (a clone of its snapshot), the image
        is deleted, later the instance."""
        image = self.own()
        if image is None:
            return
        self.images.remove(image)
        disk = f"{PREFIX}{uuid.uuid4()}_disk"
        try:
            rbd("rbd clone (Nova boots)", "clone", f"images/{image.id}@snap",
                f"vms/{disk}")
        except SoakError:
            self.images.append(image)
            return
        tracked = options().soak_driver == "rbd_tracked"
        answer = self.call("delete (image has a clone)", "DELETE",
                           f"/v2/images/{image.id}", (204,) if tracked
                           else (409, 204))
        try:
            rbd("rbd rm (Nova deletes the disk)", "rm", "--no-progress",
                f"vms/{disk}")
        except SoakError:
            return
        if answer is None or answer.status_code == 409:
            self.delete(image)

    @task(1)
    def chain_snapshot(self) -> None:
        """An instance snapshot as a chain, registered through the API;
        read once Glance has hashed it; then the image and the disk go."""
        seed, data = new_data()
        disk = f"{PREFIX}{seed}_disk"
        try:
            rbd("rbd import (a disk)", "import", "--no-progress", "-",
                f"vms/{disk}", data=data)
        except SoakError:
            return
        try:
            self.register_and_read(disk, data)
        finally:
            with contextlib.suppress(SoakError):
                rbd("rbd rm (the disk)", "rm", "--no-progress", f"vms/{disk}")

    def register_and_read(self, disk: str, data: bytes) -> None:
        try:
            made = cli("snapshot --register (CLI)", "snapshot", "--register",
                       "--execute", "--os-cloud", "soak", "--format", "json",
                       "--name", f"{PREFIX}chain of {disk}", f"vms/{disk}")
        except SoakError:
            return
        (row,) = json.loads(made.stdout)
        image = Image(row["image_id"], data, hashlib.md5(data).hexdigest())
        if self.hashed(image.id):
            self.call("download (chain)", "GET", f"/v2/images/{image.id}/file",
                      (200,), check=lambda r: None if hashlib.md5(
                          r.content).hexdigest() == image.md5 else
                      "wrong data: the chain image's MD5 differs")
        self.delete(image, "delete (chain)")

    def hashed(self, image_id: str, timeout: float = 300) -> bool:
        """Wait until glance's location_import task has ended and the
        image is active with its hash (deleting it before races the task;
        the tasks are read first, see tests.sides.wait_active)."""
        start, deadline = time.perf_counter(), time.monotonic() + timeout
        status = "not read"
        while time.monotonic() < deadline:
            tasks = self.call("tasks (chain, until hashed)", "GET",
                              f"/v2/images/{image_id}/tasks", (200,))
            shown = self.call("show (chain, until hashed)", "GET",
                              f"/v2/images/{image_id}", (200,))
            if tasks is None or shown is None:
                return False
            body, listed = shown.json(), tasks.json()["tasks"]
            status = body["status"]
            ended = bool(listed) and all(
                t["status"] in ("success", "failure") for t in listed)
            if ended and status == "active" and body["os_hash_value"]:
                fire("chain image hashed", "wait", start, None)
                return True
            if ended or status in ("killed", "deleted"):
                break
            gevent.sleep(0.5)
        fire("chain image hashed", "wait", start, SoakError(
            f"not hashed: {image_id} is {status} after "
            f"{time.perf_counter() - start:.0f} s"))
        return False
