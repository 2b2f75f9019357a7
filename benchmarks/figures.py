"""What every benchmark prints (medians with their spread, the monitor
setting and objectstore the figures were taken under), how it clears up,
the glance-api it runs, and the soak benchmark's figure over time."""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import json
import os
import statistics
import subprocess

import rados
import rbd

GLANCE_API_DEV = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "tools", "glance-api-dev")


def spread(values: list[float], unit: str = "") -> str:
    med = statistics.median(values)
    width = 100 * (max(values) - min(values)) / med if med else 0.0
    return (f"median {med:9.3f}{(' ' + unit) if unit else ''} (min "
            f"{min(values):.3f} .. max {max(values):.3f}, spread "
            f"{width:.0f} %, n={len(values)})")


def paxos_interval() -> str:
    """The monitor's paxos_propose_interval, asked of the daemon itself
    (``ceph config show`` repeats what it last reported, which lags)."""
    res = subprocess.run(["ceph", "tell", "mon.a", "config", "get",
                          "paxos_propose_interval", "--format", "json"],
                         capture_output=True, text=True)
    try:
        return json.loads(res.stdout)["paxos_propose_interval"]
    except (ValueError, KeyError):
        return "unknown"


def purge(ioctx: rados.Ioctx, name: str) -> None:
    """Remove an image the benchmark made, with its snapshots."""
    with rbd.Image(ioctx, name) as image:
        for snap in image.list_snaps():
            if image.is_protected_snap(snap["name"]):
                image.unprotect_snap(snap["name"])
            image.remove_snap(snap["name"])
    rbd.RBD().remove(ioctx, name)


@contextlib.contextmanager
def glance_api(port: int, directory: str | None = None,
               **settings: str) -> Iterator[str]:
    """A glance-api of tools/glance-api-dev on 127.0.0.1:``port``, in
    ``directory`` (default /tmp/glance-rbd-tracked-bench-glance-PORT), with
    more GLANCE_DEV_* ``settings``; stopped (its directory removed)
    afterwards.  Yields its URL."""
    env = dict(os.environ, GLANCE_DEV_PORT=str(port), GLANCE_DEV_DIR=(
        directory or f"/tmp/glance-rbd-tracked-bench-glance-{port}"),
        **settings)
    down = [GLANCE_API_DEV, "down"]
    subprocess.run(down, env=env, capture_output=True, timeout=120)
    up = subprocess.run([GLANCE_API_DEV, "up"], env=env, capture_output=True,
                        text=True, timeout=900)
    if up.returncode:
        raise SystemExit(f"glance-api did not start:\n{up.stderr[-3000:]}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(down, env=env, capture_output=True, timeout=120)


def objectstore(conf: str) -> str:
    """osd.0's objectstore (memstore, bluestore)."""
    out = subprocess.run(["ceph", "-c", conf, "osd", "metadata", "0", "-f",
                          "json"], capture_output=True, text=True)
    try:
        return json.loads(out.stdout)["osd_objectstore"]
    except (ValueError, KeyError):
        return "unknown"


def plot_soak(runs: list[dict], path: str) -> None:
    """The soak benchmark over time (``bench_soak.py --plot``): latency of
    uploads and of downloads (locust's p50 and p99 over its rolling 10 s
    window), requests/s of all operations, and the RSS of each uWSGI
    worker; one column per number of clients, one colour per driver; the
    faults shaded from the kill until the cluster has the daemon back."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    counts = sorted({r["clients"] for r in runs})
    fig, axes = pyplot.subplots(4, len(counts), sharex="col", squeeze=False,
                                figsize=(6.5 * len(counts), 10))
    colours = {"rbd_tracked": "tab:blue", "rbd": "tab:orange"}
    latency = {0: "upload (Content-Length)", 1: "download"}
    for col, clients in enumerate(counts):
        column = [axes[row][col] for row in range(4)]
        rate, rss = column[2], column[3]
        for run in (r for r in runs if r["clients"] == clients):
            colour = colours.get(run["driver"], "tab:gray")
            with open(f"{run['dir']}/locust_stats_history.csv") as f:
                history = [r for r in csv.DictReader(f)
                           if r["50%"] not in ("N/A", "0")]
            for row, name in latency.items():
                rows = [r for r in history if r["Name"] == name]
                t = [float(r["Timestamp"]) - run["t0"] for r in rows]
                for pct, style in (("50%", "-"), ("99%", "--")):
                    column[row].plot(
                        t, [float(r[pct]) / 1000 for r in rows],
                        color=colour, linestyle=style,
                        label=f"{run['driver']} p{pct[:-1]}")
            rows = [r for r in history if r["Name"] == "Aggregated"]
            rate.plot([float(r["Timestamp"]) - run["t0"] for r in rows],
                      [float(r["Requests/s"]) for r in rows], color=colour,
                      label=run["driver"])
            with open(f"{run['dir']}/samples.csv") as f:
                samples = list(csv.DictReader(f))
            for i, pid in enumerate(dict.fromkeys(s["pid"] for s in samples)):
                mine = [s for s in samples if s["pid"] == pid]
                rss.plot([float(s["t"]) for s in mine],
                         [float(s["rss_mib"]) for s in mine], color=colour,
                         linewidth=1, label=run["driver"] if i == 0 else None)
        first = next(r for r in runs if r["clients"] == clients)
        killed: dict[str, float] = {}
        for fault in first["faults"]:
            if fault["command"] == "kill":
                killed[fault["daemon"]] = fault["t"]
            elif fault["daemon"] in killed:
                shade = "mistyrose" if fault["daemon"].startswith("osd") \
                    else "lightcyan"
                for ax in column:
                    ax.axvspan(killed[fault["daemon"]],
                               fault["t"] + fault["seconds"], color=shade)
                column[0].annotate(f"{fault['daemon']} killed",
                                   (killed.pop(fault["daemon"]), 1),
                                   fontsize=8, va="top",
                                   xycoords=("data", "axes fraction"))
        for row, name in latency.items():
            column[row].set_yscale("log")
            column[row].set_ylabel(f"{name.split()[0]}, s")
        column[0].set_title(f"{clients} clients, {first['processes']} uWSGI "
                            f"processes x {first['threads']} threads, "
                            f"{first['size_mib']:g} MiB images")
        rate.set_ylabel("requests/s, all")
        rss.set_ylabel("RSS per worker, MiB")
        rss.set_xlabel("seconds since the start")
        for ax in column:
            ax.legend(fontsize=7, loc="upper right")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def plot_edge(rows: list[dict], path: str) -> None:
    """The edge benchmark (``bench_edge.py --plot``): bytes over the link
    and time of each route, per image size and change pattern (log
    scales: the routes differ by two orders of magnitude)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    routes = (("stock", "stock copy-image", "tab:orange"),
              ("ours", "our copy-image", "tab:blue"),
              ("direct", "glance-rbd-tracked copy", "tab:green"))
    labels = [f"{r['size_mib'] // 1024 or r['size_mib']}"
              f"{' GiB' if r['size_mib'] >= 1024 else ' MiB'}\n{r['pattern']}"
              for r in rows]
    fig, (sent, took) = pyplot.subplots(1, 2, figsize=(11, 4))
    width = 0.27
    for i, (key, name, colour) in enumerate(routes):
        xs = [x + (i - 1) * width for x in range(len(rows))]
        sent.bar(xs, [r[f"{key}_bytes"] / (1 << 20) for r in rows], width,
                 label=name, color=colour)
        took.bar(xs, [r[f"{key}_s"] for r in rows], width, label=name,
                 color=colour)
    for ax, title in ((sent, "MiB over the link"), (took, "seconds")):
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)), labels)
        ax.set_title(title)
        ax.grid(axis="y", which="both", alpha=0.3)
    handles, names = sent.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3)
    fig.suptitle("A snapshot changed by 1 % over its base, copied to an edge "
                 "site over 100 Mbit/s")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
