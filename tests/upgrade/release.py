"""A released version of the store in a virtualenv of its own.

The previous release is installed from this repository's history (its tag,
or its commit when a clone lacks the tag), with the dependencies its own
``setup.cfg`` names and Debian's ``rados``/``rbd`` modules linked in as
``tools/venv-setup`` does, so that its code never shares a process, or a
``site-packages``, with the code under test.  Usable without pytest:

    python -m tests.upgrade.release /tmp/venv-0.1.0   # build (or reuse) it
"""

from __future__ import annotations

import dataclasses
import fcntl
import glob
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from typing import TextIO

REPO = pathlib.Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Release:
    """A release: its name (the git tag) and the commit the tag names."""

    name: str
    commit: str


#: The release before this one (doc/source/changelog.rst).
PREVIOUS = Release("0.1.0", "0e6448ecc4964b1d22e1f8e92bc437a4f1987284")


class Unavailable(Exception):
    """The release cannot be installed from this checkout."""


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def resolve(release: Release) -> str:
    """The commit to install: the tag's, or the release's own commit when
    the clone has no such tag (CI clones may lack tags).  A tag that names
    another commit than the changelog's is an error, not a choice."""
    try:
        tagged = _git("rev-parse", "--verify", "-q",
                      f"refs/tags/{release.name}^{{commit}}")
    except subprocess.CalledProcessError:
        tagged = ""
    if tagged and tagged != release.commit:
        raise Unavailable(f"tag {release.name} names {tagged}, but the "
                          f"changelog's {release.name} is {release.commit}")
    try:
        return _git("rev-parse", "--verify", "-q",
                    f"{release.commit}^{{commit}}")
    except subprocess.CalledProcessError:
        raise Unavailable(
            f"neither the tag {release.name} nor the commit "
            f"{release.commit} is in {REPO} (a shallow clone? `git fetch "
            f"--unshallow --tags`)") from None


def python_of(venv: pathlib.Path) -> pathlib.Path:
    return venv / "bin" / "python"


def build(venv: pathlib.Path, release: Release = PREVIOUS, *,
          log: TextIO = sys.stderr) -> pathlib.Path:
    """Install ``release`` into ``venv`` (made if missing); returns the
    venv's python.  A venv that already holds this commit is reused; two
    runs building the same one take turns."""
    commit = resolve(release)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(venv, release, commit, log)


def _build(venv: pathlib.Path, release: Release, commit: str,
           log: TextIO) -> pathlib.Path:
    marker = venv / "glance-rbd-tracked-commit"
    python = python_of(venv)
    if marker.exists():
        if marker.read_text().strip() == commit:
            return python
        shutil.rmtree(venv)  # made here for another commit: start afresh
    started = time.monotonic()
    if not python.exists():
        # no pip of its own: this process's pip installs into it (--python)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip",
                        str(venv)], check=True)
    _link_ceph_modules(python)
    with tempfile.TemporaryDirectory(prefix="grt-release-") as src:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
        # the dependencies are the release's own (its setup.cfg); pip's
        # index and cache as configured on the machine
        result = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(python), "install",
             "-q", "--disable-pip-version-check", "--no-compile", src],
            capture_output=True, text=True)
    if result.returncode != 0:
        raise Unavailable(f"pip could not install {release.name}:\n"
                          + result.stderr[-3000:])
    installed = subprocess.run(
        [str(python), "-c", "import glance_rbd_tracked as g, rados, rbd; "
         "print(g.__version__, g.__file__)"],
        check=True, capture_output=True, text=True, cwd="/").stdout.split()
    if not installed[1].startswith(str(venv)):
        raise Unavailable(f"{python} imports glance_rbd_tracked from "
                          f"{installed[1]}, not from the venv")
    marker.write_text(commit + "\n")
    print(f"{release.name} ({commit[:7]}, version {installed[0]}) in {venv}: "
          f"{time.monotonic() - started:.1f} s", file=log)
    return python


def _link_ceph_modules(python: pathlib.Path) -> None:
    """Debian's rados/rbd extension modules, linked into the venv (as
    tools/venv-setup does; Debian builds them for its CPython only)."""
    site = subprocess.run(
        [str(python), "-c",
         'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        check=True, capture_output=True, text=True).stdout.strip()
    for mod in ("rados", "rbd"):
        found = sorted(glob.glob(f"/usr/lib/python3/dist-packages/{mod}"
                                 ".cpython-3*.so"))
        if not found:
            # the modules this process imports (a venv made by venv-setup)
            here = sysconfig.get_paths()["purelib"]
            found = sorted(glob.glob(f"{here}/{mod}.cpython-3*.so"))
        if not found:
            raise Unavailable(f"Debian's python3-{mod} module is missing")
        link = os.path.join(site, os.path.basename(found[0]))
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.realpath(found[0]), link)


if __name__ == "__main__":
    print(build(pathlib.Path(sys.argv[1])))
