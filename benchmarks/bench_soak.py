"""Load and soak through the real glance-api, as deployed.

For each number of clients and each store driver (``rbd_tracked`` and
glance_store's stock ``rbd``, side by side), on the cluster named by
$CEPH_CONF (``tools/bench soak`` starts three OSDs on BlueStore):

1. starts glance-api under uWSGI with PROCESSES x THREADS
   (tools/glance-api-dev, GLANCE_DEV_DRIVER);
2. runs locust headless for a fixed time, K users of
   ``soak_locustfile.py`` (uploads of known and unknown size, full and
   ranged downloads, shows, deletes of images with a clone; rbd_tracked
   also chain snapshots registered through the API and ``cleanup
   --execute`` every 30 s), while it kills an OSD and starts it again, then
   kills the monitor and starts it again (tools/ceph-dev-cluster, which
   needs $CEPH_DEV_DIR);
3. samples RSS and open file descriptors of every uWSGI worker each second;
4. afterwards deletes whatever the load left in Glance, removes its disks,
   runs cleanup (rbd_tracked) and lists what is left: RBD images in every
   pool, the RBD trashes, the store's journal; reads glance-api's uWSGI log
   for worker deaths and respawns.

Prints one table per number of clients (ops/s, p50 and p99 per operation,
errors by kind; workers' RSS and fds at start and end; deaths; leftovers),
writes ``summary.json`` and ``ops.csv`` into ``--out`` with, per run, locust's
CSVs, ``samples.csv``, ``faults.json`` and glance-api's log, and with
``--plot`` the latency-and-RSS figure of :func:`figures.plot_soak`.
``--check`` exits 1 on any problem (:func:`problems`): a worker death, an
error a user saw, a leftover, fd growth.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import contextlib
import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import figures
import psutil
import rbd
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from glance_rbd_tracked import ceph as ceph_mod  # noqa: E402
from tests.sides import Side  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LOCUSTFILE = os.path.join(HERE, "soak_locustfile.py")
CLUSTER = os.path.join(ROOT, "tools", "ceph-dev-cluster")
PREFIX = "soak-"  # soak_locustfile.PREFIX (that file imports gevent)
POOLS = ("images", "vms", "volumes")
MiB = 1 << 20
#: open files a worker may hold at the end, idle, above what it held once
#: warmed up (sockets to a restarted OSD are replaced, not added)
FD_SLACK = 8
#: uWSGI's lines about a worker that died and the one started instead
DEATH = re.compile(r"DAMN ! worker \d+ \(pid: (\d+)\) died(?:, killed by "
                   r"signal (\d+))?")
RESPAWN = re.compile(r"Respawned uWSGI worker \d+ \(new pid: (\d+)\)")
#: what a crashing native library leaves in the log besides
#: the first line of each ERROR record of glance-api (oslo.log)
ERROR = re.compile(r" ERROR \S+ \[", re.MULTILINE)
FATAL = re.compile(r"terminate called|std::system_error|Segmentation fault|"
                   r"Fatal Python error|Aborted|core dumped")


@dataclasses.dataclass(frozen=True)
class Setup:
    driver: str
    clients: int
    seconds: int
    processes: int
    threads: int
    size_mib: float
    faults: tuple[str, ...]
    cleanup_every: float
    port: int
    glance_dir: str
    out: str

    @property
    def name(self) -> str:
        return f"{self.driver}-{self.clients}"


# ---------------------------------------------------------------- glance-api

@contextlib.contextmanager
def glance_api(setup: Setup, run_dir: str) -> Iterator[dict[str, str]]:
    """glance-api with the setup's driver and uWSGI processes x threads;
    its log is copied into ``run_dir`` before it goes."""
    d = setup.glance_dir
    log = os.path.join(d, "glance-api.log")
    with figures.glance_api(setup.port, d, GLANCE_DEV_DRIVER=setup.driver,
                            GLANCE_DEV_PROCESSES=str(setup.processes),
                            GLANCE_DEV_THREADS=str(setup.threads)) as url:
        try:
            with open(os.path.join(d, "glance-api.pid")) as pid:
                yield {"url": url, "log": log, "pid": pid.read().strip(),
                       "conf": os.path.join(d, "glance-api.conf")}
        finally:
            with contextlib.suppress(OSError):
                shutil.copy(log, run_dir)


def clouds_yaml(path: str, url: str) -> str:
    """openstacksdk's cloud 'soak' for snapshot --register: the loopback
    identity of tests/e2e/openstack/identity, with the service role."""
    with open(path, "w") as out:
        out.write(f"""clouds:
  soak:
    auth_type: grt-loopback
    auth:
      endpoint: {url}
      roles: member,reader
      service_roles: service
""")
    return path


# ---------------------------------------------------------------- sampling

class Sampler(threading.Thread):
    """RSS, open fds and threads of each uWSGI worker (the master's
    children), once a second, into ``rows``."""

    def __init__(self, master: int, t0: float) -> None:
        super().__init__(daemon=True)
        self.master, self.t0 = psutil.Process(master), t0
        self.rows: list[dict[str, Any]] = []
        self.phase = "load"
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            self.sample()

    def sample(self) -> None:
        now = round(time.time() - self.t0, 2)
        for child in self.master.children():
            with contextlib.suppress(psutil.Error), child.oneshot():
                self.rows.append({
                    "t": now, "phase": self.phase, "pid": child.pid,
                    "rss_mib": round(child.memory_info().rss / MiB, 1),
                    "fds": child.num_fds(),
                    "threads": child.num_threads()})

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.sample()  # the workers at the very end, idle


def workers(rows: list[dict[str, Any]], warm: float) -> list[dict[str, Any]]:
    """Per worker: RSS and fds once warmed up (its first sample ``warm``
    seconds after its first: a respawned worker warms up too), at the end,
    and at most."""
    out = []
    for pid in dict.fromkeys(r["pid"] for r in rows):
        mine = [r for r in rows if r["pid"] == pid]
        start = next((r for r in mine if r["t"] >= mine[0]["t"] + warm),
                     mine[-1])
        end = mine[-1]
        out.append({"pid": pid, "from_s": mine[0]["t"], "to_s": end["t"],
                    "rss_start_mib": start["rss_mib"],
                    "rss_end_mib": end["rss_mib"],
                    "rss_max_mib": max(r["rss_mib"] for r in mine),
                    "fds_start": start["fds"], "fds_end": end["fds"],
                    "fds_max": max(r["fds"] for r in mine),
                    "threads_end": end["threads"]})
    return out


# ---------------------------------------------------------------- faults

def cluster(*args: str) -> tuple[int, str]:
    res = subprocess.run([CLUSTER, *args], capture_output=True, text=True,
                         timeout=300)
    return res.returncode, (res.stdout + res.stderr).strip()


def osd_to_kill(conf: str) -> str | None:
    """osd.1 of three, else osd.0 when it keeps its objects (BlueStore),
    else None (a lone memstore OSD would lose them)."""
    out = subprocess.run(["ceph", "-c", conf, "osd", "ls"],
                         capture_output=True, text=True, timeout=60).stdout
    osds = out.split()
    if len(osds) >= 3:
        return "osd.1"
    return "osd.0" if figures.objectstore(conf) == "bluestore" else None


def schedule(faults: tuple[str, ...], seconds: int,
             osd: str | None) -> list[tuple[float, str, str]]:
    """(at, command, daemon): the OSD killed at 20 % of the run and
    started at 45 %; the monitor killed at 65 % and started at once (it is
    down for as long as it takes to start)."""
    plan: list[tuple[float, str, str]] = []
    if "osd" in faults and osd:
        plan += [(0.20 * seconds, "kill", osd),
                 (0.45 * seconds, "start-daemon", osd)]
    if "mon" in faults:
        plan += [(0.65 * seconds, "kill", "mon.a"),
                 (0.65 * seconds, "start-daemon", "mon.a")]
    return plan


def inject(plan: list[tuple[float, str, str]], t0: float,
           done: list[dict[str, Any]], cancel: threading.Event) -> None:
    for at, command, daemon in plan:
        if cancel.wait(max(0.0, t0 + at - time.time())):
            return
        start = time.time()
        rc, out = cluster(command, daemon)
        done.append({"command": command, "daemon": daemon,
                     "t": round(start - t0, 1),
                     "seconds": round(time.time() - start, 1),
                     "ok": rc == 0, "output": out[-500:]})


# ---------------------------------------------------------------- the run

def run_one(setup: Setup, conf: str) -> dict[str, Any]:
    run_dir = os.path.join(setup.out, setup.name)
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    osd = osd_to_kill(conf) if "osd" in setup.faults else None
    plan = schedule(setup.faults, setup.seconds, osd)
    if plan and not os.environ.get("CEPH_DEV_DIR"):
        raise SystemExit("faults need CEPH_DEV_DIR (tools/ceph-dev-cluster's"
                         " cluster); --faults none runs without")
    before = leftovers(conf, None)
    with glance_api(setup, run_dir) as api:
        prefix = os.path.join(run_dir, "locust")
        argv = [sys.executable, "-m", "locust", "-f", LOCUSTFILE,
                "--headless", "--only-summary", "--loglevel", "WARNING",
                "-u", str(setup.clients), "-r", str(setup.clients),
                "-t", f"{setup.seconds}s", "--stop-timeout", "300",
                "--host", api["url"], "--csv", prefix, "--csv-full-history",
                "--soak-driver", setup.driver,
                "--soak-size-mib", str(setup.size_mib),
                "--soak-ceph-conf", conf, "--soak-glance-conf", api["conf"],
                "--soak-clouds", clouds_yaml(
                    os.path.join(run_dir, "clouds.yaml"), api["url"]),
                "--soak-cleanup-every", str(setup.cleanup_every)]
        t0 = time.time()
        sampler = Sampler(int(api["pid"]), t0)
        sampler.start()
        done: list[dict[str, Any]] = []
        cancel = threading.Event()
        faults = threading.Thread(target=inject, args=(plan, t0, done, cancel))
        faults.start()
        print(f"  {setup.name}: {setup.clients} clients, {setup.seconds} s, "
              f"faults: {describe(plan) or 'none'}", file=sys.stderr)
        with open(os.path.join(run_dir, "locust.log"), "w") as log:
            locust = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=setup.seconds + 900)
        elapsed = time.time() - t0
        faults.join()  # a start-daemon still waiting is let finish
        cancel.set()
        sampler.phase = "after"
        swept = sweep(api["url"], conf)
        tidy = cleanup(api["conf"]) if setup.driver == "rbd_tracked" else None
        sampler.stop()
        log_text = read(api["log"])
    run: dict[str, Any] = {
        "driver": setup.driver, "clients": setup.clients,
        "seconds": setup.seconds, "elapsed_s": round(elapsed, 1),
        "processes": setup.processes, "threads": setup.threads,
        "size_mib": setup.size_mib, "locust_exit": locust.returncode,
        "ops": locust_ops(prefix, setup.seconds),
        "errors": locust_errors(prefix, t0),
        "exceptions": locust_exceptions(prefix),
        "uwsgi": uwsgi(log_text),
        "workers": workers(sampler.rows, min(10.0, setup.seconds / 4)),
        "faults": done, "swept": swept, "cleanup": tidy,
        "leftovers": leftovers(conf, before), "dir": run_dir, "t0": t0,
    }
    run["problems"] = problems(run)
    if setup.driver == "rbd":
        # glance_store's trash_move of an image with format-2 clones: nothing
        # ever removes it; gone before the next run, counted above
        purge_trash(conf, run["leftovers"].get("images trash", []))
    write_csv(os.path.join(run_dir, "samples.csv"), sampler.rows)
    with open(os.path.join(run_dir, "faults.json"), "w") as out:
        json.dump(done, out, indent=1)
    return run


def describe(plan: list[tuple[float, str, str]]) -> str:
    return ", ".join(f"{cmd} {daemon} at {at:.0f} s"
                     for at, cmd, daemon in plan)


def read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def sweep(url: str, conf: str) -> dict[str, Any]:
    """Delete what the load left: its images in Glance (after its disks,
    which may clone them) and its disks in vms.  Counted, not hidden."""
    session = requests.Session()
    images = [i for i in session.get(f"{url}/v2/images?limit=1000",
                                     timeout=120).json()["images"]
              if i["name"] and i["name"].startswith(PREFIX)]
    answers = {i["id"]: session.delete(f"{url}/v2/images/{i['id']}",
                                       timeout=300).status_code
               for i in images}
    side = Side(conf)
    try:
        disks = sorted(n for n in side.names("vms") if n.startswith(PREFIX))
        failed = []
        for disk in disks:
            try:
                side.remove("vms", disk)
            except rbd.Error as exc:
                failed.append(f"vms/{disk}: {exc}")
    finally:
        side.close()
    for image_id, status in answers.items():
        if status != 204:
            answers[image_id] = session.delete(
                f"{url}/v2/images/{image_id}", timeout=300).status_code
    return {"glance_images": len(images), "disks": len(disks),
            "not_deleted": [f"{k}: HTTP {v}" for k, v in answers.items()
                            if v not in (204, 404)] + failed}


def cleanup(glance_conf: str) -> dict[str, Any]:
    """``glance-rbd-tracked cleanup --execute``, once more, as cron runs it."""
    exe = os.path.join(os.path.dirname(sys.executable), "glance-rbd-tracked")
    res = subprocess.run([exe, "--config-file", glance_conf, "--backend",
                          "fast", "cleanup", "--execute", "--format", "json"],
                         capture_output=True, text=True, timeout=600)
    try:
        rows = json.loads(res.stdout) if res.stdout.strip() else []
    except ValueError:
        rows = [res.stdout[-500:]]
    return {"exit": res.returncode, "rows": rows, "stderr": res.stderr[-500:]}


def leftovers(conf: str, before: dict[str, list[str]] | None
              ) -> dict[str, list[str]]:
    """RBD images in each pool and its trash, and the store's journal
    entries; with ``before``, only what was not there then."""
    side, store = Side(conf), ceph_mod.connect(conf)
    try:
        found: dict[str, list[str]] = {}
        for pool in POOLS:
            found[pool] = sorted(side.names(pool))
            with side.ioctx(pool) as ioctx:
                found[f"{pool} trash"] = sorted(
                    f"{e['name']} ({e['id']})"
                    for e in rbd.RBD().trash_list(ioctx))
        found["journal"] = sorted(store.journal.entries("images"))
    finally:
        store.close()
        side.close()
    if before is not None:
        found = {k: [v for v in vs if v not in before.get(k, ())]
                 for k, vs in found.items()}
    return {k: v for k, v in found.items() if v}


def purge_trash(conf: str, entries: list[str]) -> None:
    """Remove images from the images pool's RBD trash (``NAME (ID)``)."""
    side = Side(conf)
    try:
        with side.ioctx("images") as ioctx:
            for entry in entries:
                trash_id = entry.rsplit("(", 1)[1].rstrip(")")
                rbd.RBD().trash_remove(ioctx, trash_id, force=True)
    finally:
        side.close()


def uwsgi(text: str) -> dict[str, Any]:
    """Worker deaths and respawns in glance-api's uWSGI log."""
    deaths = [m.group(0) for m in DEATH.finditer(text)]
    signals: dict[str, int] = {}
    for m in DEATH.finditer(text):
        key = m.group(2) or "exit"
        signals[key] = signals.get(key, 0) + 1
    lines = text.splitlines()
    return {"deaths": len(deaths), "death_lines": deaths[:20],
            "by_signal": signals,
            "respawns": len(RESPAWN.findall(text)),
            "fatal_lines": [ln for ln in lines if FATAL.search(ln)][:20],
            "error_records": len(ERROR.findall(text))}


# ---------------------------------------------------------------- locust's CSVs

def rows_of(path: str) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def locust_ops(prefix: str, seconds: int) -> list[dict[str, Any]]:
    """Per operation: count, ops/s over the run's time, p50 and p99 (ms,
    locust's approximation), failures; the Aggregated row last."""
    ops = []
    for row in rows_of(f"{prefix}_stats.csv"):
        count = int(row["Request Count"])
        ops.append({"op": row["Name"], "type": row["Type"], "count": count,
                    "failures": int(row["Failure Count"]),
                    "ops_s": round(count / seconds, 2),
                    "p50_ms": number(row["50%"]), "p99_ms": number(row["99%"]),
                    "max_ms": number(row["Max Response Time"])})
    return ops


def error_kind(error: str) -> str:
    """``KIND`` of a locust error text: the locustfile names its failures
    ``KIND: detail`` (wrapped in CatchResponseError(...) or SoakError(...))."""
    text = re.sub(r"^(CatchResponseError|SoakError)\((['\"])(.*)\2\)$",
                  r"\3", error.strip())
    return text.split(":", 1)[0].strip() or "unknown"


def locust_errors(prefix: str, t0: float) -> list[dict[str, Any]]:
    errors = []
    for row in rows_of(f"{prefix}_failures.csv"):
        errors.append({"op": row["Name"], "kind": error_kind(row["Error"]),
                       "count": int(row["Occurrences"]),
                       "error": row["Error"][:300],
                       "first_s": seen(row.get("First Seen", ""), t0),
                       "last_s": seen(row.get("Last Seen", ""), t0)})
    return errors


def seen(stamp: str, t0: float) -> float | None:
    """Seconds since the start of a locust timestamp (unix seconds, or an
    ISO date in newer locusts)."""
    value = number(stamp)
    if value is None:
        from datetime import datetime
        try:
            value = datetime.fromisoformat(stamp.replace("Z", "+00:00")
                                           ).timestamp()
        except ValueError:
            return None
    return round(value - t0, 1)


def locust_exceptions(prefix: str) -> list[str]:
    """Exceptions a task raised (a bug of the locustfile, or an answer it
    could not parse): each one is a problem too."""
    return [f"{r['Count']} x {r['Message'][:300]}"
            for r in rows_of(f"{prefix}_exceptions.csv")]


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------- verdict

def problems(run: dict[str, Any]) -> list[str]:
    """Everything that fails a soak: worker deaths, errors users saw,
    leftovers, fd growth, a fault that was not injected."""
    found = []
    u = run["uwsgi"]
    if u["deaths"] or u["respawns"]:
        found.append(f"uWSGI: {u['deaths']} worker deaths {u['by_signal']}, "
                     f"{u['respawns']} respawns: {u['death_lines'][:3]}")
    if u["fatal_lines"]:
        found.append(f"glance-api's log: {u['fatal_lines'][:3]}")
    for e in run["errors"]:
        found.append(f"{e['count']} x {e['op']}: {e['error'][:200]} (from "
                     f"{e['first_s']} s to {e['last_s']} s)")
    found += [f"locustfile exception: {e}" for e in run["exceptions"]]
    if run["locust_exit"] not in (0, 1):  # 1: some request failed
        found.append(f"locust exited {run['locust_exit']}")
    for pool, names in run["leftovers"].items():
        found.append(f"left in {pool}: {len(names)}: {', '.join(names[:3])}"
                     f"{', ...' if len(names) > 3 else ''}")
    if run["swept"]["not_deleted"]:
        found.append(f"could not delete: {run['swept']['not_deleted'][:5]}")
    if run["cleanup"] is not None and run["cleanup"]["exit"] != 0:
        found.append(f"cleanup --execute exited {run['cleanup']['exit']}: "
                     f"{run['cleanup']['stderr'][-300:]}")
    for w in run["workers"]:
        if w["fds_end"] > w["fds_start"] + FD_SLACK:
            found.append(f"worker {w['pid']}: open fds grew from "
                         f"{w['fds_start']} to {w['fds_end']}")
    found += [f"{f['command']} {f['daemon']} failed: {f['output'][-300:]}"
              for f in run["faults"] if not f["ok"]]
    return found


# ---------------------------------------------------------------- the table

def table(runs: list[dict[str, Any]]) -> str:
    """Operations down, drivers across: ops/s, p50, p99, errors."""
    drivers = [r["driver"] for r in runs]
    names: list[str] = []
    for r in runs:
        names += [o["op"] for o in r["ops"]
                  if o["op"] not in names and o["op"] != "Aggregated"]
    names.append("Aggregated")
    width = max(len(n) for n in names)
    head = f"{'operation':{width}}"
    for d in drivers:
        head += f" | {d:>11} ops/s   p50 ms   p99 ms  err"
    lines = [head, "-" * len(head)]
    for name in names:
        line = f"{name:{width}}"
        for r in runs:
            o = next((o for o in r["ops"] if o["op"] == name), None)
            line += (" | " + " " * 35 + "-" if o is None else
                     f" | {o['ops_s']:17.2f} {ms(o['p50_ms'])} "
                     f"{ms(o['p99_ms'])} {o['failures']:4d}")
        lines.append(line)
    lines.append("")
    for r in runs:
        lines += describe_run(r)
    return "\n".join(lines)


def ms(value: float | None) -> str:
    return f"{'-':>8}" if value is None else f"{value:8.0f}"


def describe_run(r: dict[str, Any]) -> list[str]:
    u = r["uwsgi"]
    kinds: dict[str, int] = {}
    for e in r["errors"]:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + e["count"]
    out = [f"{r['driver']}: errors by kind: "
           f"{', '.join(f'{k} {v}' for k, v in kinds.items()) or 'none'}; "
           f"uWSGI worker deaths {u['deaths']} {u['by_signal'] or ''}, "
           f"respawns {u['respawns']}; glance-api ERROR records "
           f"{u['error_records']}"]
    for w in r["workers"]:
        out.append(f"  worker {w['pid']} ({w['from_s']:.0f}-{w['to_s']:.0f} s):"
                   f" RSS {w['rss_start_mib']:.0f} -> {w['rss_end_mib']:.0f} "
                   f"MiB (max {w['rss_max_mib']:.0f}), fds {w['fds_start']} ->"
                   f" {w['fds_end']} (max {w['fds_max']})")
    for f in r["faults"]:
        out.append(f"  at {f['t']:5.1f} s: {f['command']} {f['daemon']} "
                   f"({f['seconds']} s{'' if f['ok'] else ', FAILED'})")
    s = r["swept"]
    left = "; ".join(f"{place}: {len(names)} ({', '.join(names[:2])}"
                     f"{', ...' if len(names) > 2 else ''})"
                     for place, names in r["leftovers"].items())
    out.append(f"  swept after the run: {s['glance_images']} Glance images, "
               f"{s['disks']} disks; left over: "
               f"{left or 'nothing (pools, trashes, journal)'}")
    out += [f"  PROBLEM: {p}" for p in r["problems"]]
    return out


# ---------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drivers", default="rbd_tracked,rbd",
                        help="store drivers, in turn (default rbd_tracked,rbd)")
    parser.add_argument("--clients", default="8",
                        help="concurrent locust users, a list (e.g. 8,32)")
    parser.add_argument("--seconds", type=int, default=60,
                        help="length of each run (default 60)")
    parser.add_argument("--processes", type=int, default=2,
                        help="uWSGI processes (default 2)")
    parser.add_argument("--threads", type=int, default=4,
                        help="threads per uWSGI process (default 4)")
    parser.add_argument("--size-mib", type=float, default=4,
                        help="image size (default 4)")
    parser.add_argument("--faults", default="osd,mon",
                        help="osd, mon, both (default) or none")
    parser.add_argument("--cleanup-every", type=float, default=30,
                        help="seconds between cron's cleanup runs (default 30)")
    parser.add_argument("--glance-port", type=int,
                        default=int(os.environ.get("BENCH_GLANCE_PORT",
                                                   "9494")))
    parser.add_argument("--glance-dir", default=None,
                        help="glance-api's directory (default "
                             "/tmp/glance-rbd-tracked-bench-glance-PORT)")
    parser.add_argument("--out", default="/tmp/glance-rbd-tracked-soak",
                        help="results: summary.json, ops.csv, a directory "
                             "per run")
    parser.add_argument("--plot", metavar="FILE",
                        help="latency and RSS over time (matplotlib; .svg "
                             "or .png)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 on any problem of an rbd_tracked run "
                             "(the stock driver's are reported, as a "
                             "baseline)")
    args = parser.parse_args()
    conf = os.environ["CEPH_CONF"]
    faults = tuple(f for f in args.faults.split(",") if f and f != "none")
    if set(faults) - {"osd", "mon"}:
        parser.error("--faults: osd, mon or none")
    os.makedirs(args.out, exist_ok=True)
    glance_dir = args.glance_dir or \
        f"/tmp/glance-rbd-tracked-bench-glance-{args.glance_port}"
    header = (f"objectstore: {figures.objectstore(conf)}; monitor "
              f"paxos_propose_interval: {figures.paxos_interval()}")
    runs = []
    for clients in [int(c) for c in args.clients.split(",") if c]:
        group = []
        for driver in [d for d in args.drivers.split(",") if d]:
            setup = Setup(driver, clients, args.seconds, args.processes,
                          args.threads, args.size_mib, faults,
                          args.cleanup_every, args.glance_port, glance_dir,
                          args.out)
            group.append(run_one(setup, conf))
        runs += group
        print(f"\n{header}\n{clients} clients, {args.processes} uWSGI "
              f"processes x {args.threads} threads, {args.seconds} s, "
              f"{args.size_mib:g} MiB images, faults: "
              f"{', '.join(faults) or 'none'}\n")
        print(table(group), flush=True)
    with open(os.path.join(args.out, "summary.json"), "w") as out:
        json.dump({"header": header, "runs": runs}, out, indent=1)
    write_csv(os.path.join(args.out, "ops.csv"),
              [{"driver": r["driver"], "clients": r["clients"], **o}
               for r in runs for o in r["ops"]])
    if args.plot:
        figures.plot_soak(runs, args.plot)
        print(f"\nfigure: {args.plot}")
    print(f"results: {args.out}")
    return 1 if args.check and any(r["problems"] for r in runs
                                   if r["driver"] == "rbd_tracked") else 0


if __name__ == "__main__":
    sys.exit(main())
