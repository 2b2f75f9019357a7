"""``glance-rbd-tracked``: the operator's command line.

It reads glance-api's own configuration (``--config-file``,
``--config-dir``, ``--backend``) through :mod:`glance_rbd_tracked.settings`;
flags only override.  The chain policy is the cluster's
(:mod:`glance_rbd_tracked.policy`), unless ``rbd_tracked_policy_override``
says otherwise.  Read commands (:mod:`.read`) change nothing, but for
``doctor --execute``, which sets the pool options it checks; write commands
(:mod:`.write`) print their plan and act only with ``--execute``.
Data goes to stdout, logs and progress to stderr.  Exit codes: 0 done, 1
failure or partial failure, 2 usage error.  Errors become exit codes here
alone; the traceback goes to the log (``--debug``), the user gets a sentence.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import dataclasses
import logging
import sys

from glance_rbd_tracked import __version__
from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import errors
from glance_rbd_tracked import ports
from glance_rbd_tracked import settings as settings_mod
from glance_rbd_tracked.cli import read
from glance_rbd_tracked.cli import write
from glance_rbd_tracked.cli.common import UsageError

LOG = logging.getLogger("glance_rbd_tracked.cli")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glance-rbd-tracked",
        description="Inspect and maintain images of the rbd_tracked store. "
                    "Reads glance-api's configuration; write commands show "
                    "their plan unless --execute is given.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {__version__}")
    config = parser.add_argument_group(
        "configuration", "the files glance-api reads (default: none, every "
        "option at its default)")
    config.add_argument("--config-file", action="append", default=[],
                        metavar="FILE",
                        help="e.g. /etc/glance/glance-api.conf (repeatable)")
    config.add_argument("--config-dir", action="append", default=[],
                        metavar="DIR", help="a directory of *.conf files")
    config.add_argument("--backend", metavar="NAME",
                        help="the rbd_tracked backend of enabled_backends "
                             "(needed only when there are several)")
    config.add_argument("--ceph-conf", metavar="FILE",
                        help="override rbd_store_ceph_conf")
    config.add_argument("--user", metavar="ID",
                        help="override rbd_store_user (cephx user id)")
    parser.add_argument("--debug", action="store_true",
                        help="log details and tracebacks to stderr")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="COMMAND")
    read.add_commands(sub)
    write.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None,
         ceph: ports.Backend | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    opened = None
    try:
        settings = configured(args)
        if ceph is None:
            ceph = opened = ceph_mod.connect(
                settings.ceph_conf, settings.user, timeout=settings.timeout,
                connect_timeout=settings.connect_timeout)
        return int(args.run(args, ceph, settings))
    except (UsageError, errors.ConfigError, errors.Invalid) as exc:
        print(f"glance-rbd-tracked: {exc}", file=sys.stderr)
        return 2
    except errors.TrackedError as exc:
        LOG.debug("command failed", exc_info=True)
        print(f"glance-rbd-tracked: {exc}", file=sys.stderr)
        return 1
    finally:
        # A librados client left to the interpreter's exit crashes it now
        # and then (its threads outlive the objects they use).
        if opened is not None:
            opened.close()


def configured(args: argparse.Namespace) -> settings_mod.Settings:
    """glance-api's settings, with the flags' overrides."""
    settings = settings_mod.load(args.config_file, args.config_dir,
                                 args.backend)
    overrides = {key: value for key, value in (("ceph_conf", args.ceph_conf),
                                               ("user", args.user))
                 if value is not None}
    return dataclasses.replace(settings, **overrides)
