"""A real Nova or Cinder process that a test drives, one JSON line at a time.

Nova and Cinder register options on oslo.config's global ``CONF`` and choose
their concurrency (threading, eventlet) at import: they cannot share a
process with each other or with pytest.  So :class:`Worker` starts
``python -m <module> <config as JSON>`` (``nova_side`` or ``cinder_side``),
whose :func:`serve` answers the first line with what it set up, then one
line per request::

    {"op": "snapshot", "args": {...}}   ->   {"result": ...}
                                        or   {"error": {"type", "message"}}

The worker's own output and logs go to its stderr, kept in a file.  The
identity directory (a keystoneauth plugin standing in for keystone, see
``identity/grt_loopback_identity.py``) is on the worker's ``sys.path``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
import importlib
import json
import logging
import os
import select
import subprocess
import sys
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
IDENTITY = os.path.join(HERE, "identity")


PROJECT = "00000000000000000000000000000de0"  # glance-api-dev's project


class Lines(logging.Handler):
    """The log lines a side shows the test (what an operator would read)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def client_ceph_conf(config: dict[str, Any], keyring: str | None) -> str:
    """The cluster's ceph.conf for this side: its clone format and keyring."""
    path = os.path.join(config["state_dir"], "ceph.conf")
    with open(config["ceph_conf"]) as src, open(path, "w") as dst:
        dst.write(src.read())
        dst.write("\n[client]\n")
        if config.get("clone_format"):
            dst.write(f"\trbd default clone format = "
                      f"{config['clone_format']}\n")
        if keyring:
            dst.write(f"\tkeyring = {keyring}\n")
    return path


class Failed(Exception):
    """The worker's call raised ``kind`` (the exception's class name)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class Worker:
    """The test's end: start the process, call it, stop it."""

    def __init__(self, module: str, config: dict[str, Any], log_path: str,
                 timeout: float = 600) -> None:
        self.log_path = log_path
        self.timeout = timeout
        path = [ROOT, IDENTITY, os.environ.get("PYTHONPATH", "")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)),
                   PYTHONUNBUFFERED="1")
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, json.dumps(config)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True, cwd=ROOT, env=env)
        self.hello: dict[str, Any] = self._reply()

    def call(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def _reply(self) -> Any:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            raise RuntimeError(f"the worker {'died' if ready else 'hung'}; "
                               f"its log:\n{self.log()[-6000:]}")
        reply = json.loads(line)
        if "error" in reply:
            raise Failed(reply["error"]["type"], reply["error"]["message"])
        return reply["result"]

    def log(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return log.read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def inject(target: str, error: str) -> None:
    """Make the store's function ``target`` (``module:name``) raise
    ``error``: a builtin exception or one of ``glance_rbd_tracked.errors``
    (a bug, or the store's own failure)."""
    from glance_rbd_tracked import errors

    module, _, name = target.partition(":")
    kind = getattr(errors, error, None) or getattr(builtins, error)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise kind(f"injected into {target}")

    setattr(importlib.import_module(module), name, broken)


Setup = Callable[[dict[str, Any]],
                 tuple[dict[str, Any], dict[str, Callable[..., Any]]]]


def serve(setup: Setup) -> None:
    """The worker's end: ``setup(config)`` returns the first reply and the
    operations; then answer requests until stdin closes."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever Nova, Cinder or librados print goes to the log
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message, default=str) + "\n")

    def error(exc: BaseException) -> dict[str, Any]:
        traceback.print_exc()
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}

    try:
        hello, ops = setup(json.loads(sys.argv[1]))
    except BaseException as exc:
        send(error(exc))
        return
    send({"result": hello})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            send({"result": ops[request["op"]](**request["args"])})
        except BaseException as exc:
            send(error(exc))
    replies.close()
