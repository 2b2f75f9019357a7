"""A rolling upgrade from the previous release, and back, on one cluster.

glance-api, nova-compute and cinder-volume are upgraded one at a time
(glance first), then downgraded in the other order (glance first again, so
that every service runs old beside every other running new at some point).
In each mix the services, each at its release, upload images, make chains
from a Nova disk and a Cinder volume, delete the image the two were made
from (retired: both clone it), retire the disk and the volume, delete the
chain images (which reclaims what they held) and run the operator's cleanup
of each release, the other release's first.  Each mix also takes over a
family the previous mix left half-way (a retired image, a retired disk, two
chain images, a volume in use) and finishes it: the services of one release
act on what the other wrote.  And the service about to change release is
killed in the middle of its work, as its restart may: the next mix's
cleanup, of the other release, rolls back its chain or finishes its delete.

Checked: no service of either release refuses anything (a ``Refused`` names
the service, its release and its error), every read gives the bytes
written, and what the pools hold afterwards (images, the RBD trash, the
store's journal) is what the mix left on purpose, nothing at the end.  The
matrix is printed as it ran.
"""

from __future__ import annotations

import collections
import dataclasses
import time
import uuid

from tests.upgrade.conftest import NEW
from tests.upgrade.conftest import OLD
from tests.upgrade.conftest import POOLS
from tests.upgrade.role import digest
from tests.upgrade.role import pattern

#: the operator runs the new doctor --execute once glance-api is upgraded:
#: from then on the chain policy is kept in the cluster (and stays there
#: when glance-api is downgraded again)
POLICY_KEPT_FROM = 1
SIZE = 256 << 10  # an image: a few objects' worth would only cost time
WRITTEN = 4096    # what Nova or Cinder write to a disk or volume
RETIRED = "_to_be_deleted"


@dataclasses.dataclass(frozen=True)
class Mix:
    name: str
    glance: str
    nova: str
    cinder: str

    def other(self, release: str) -> str:
        return NEW if release == OLD else OLD


MIXES = (
    Mix("all old", OLD, OLD, OLD),
    Mix("glance upgraded", NEW, OLD, OLD),
    Mix("glance, nova upgraded", NEW, NEW, OLD),
    Mix("all new", NEW, NEW, NEW),
    Mix("glance downgraded", OLD, NEW, NEW),
    Mix("glance, nova downgraded", OLD, OLD, NEW),
    Mix("all old again", OLD, OLD, OLD),
)


@dataclasses.dataclass
class Family:
    """What one mix makes: an image, a disk and a volume booted from it,
    their chain images, and (``with_spare``) a second image a disk without
    chains was booted from."""

    mix: Mix
    with_spare: bool = True
    base: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    spare: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    disk: str = dataclasses.field(
        default_factory=lambda: f"{uuid.uuid4()}_disk")
    spare_disk: str = dataclasses.field(
        default_factory=lambda: f"{uuid.uuid4()}_disk")
    volume: str = dataclasses.field(
        default_factory=lambda: f"volume-{uuid.uuid4()}")
    of_disk: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    of_volume: str = dataclasses.field(
        default_factory=lambda: str(uuid.uuid4()))
    locations: dict[str, str] = dataclasses.field(default_factory=dict)
    expected: dict[str, str] = dataclasses.field(default_factory=dict)

    def names(self) -> tuple[str, ...]:
        return (self.base, self.spare, self.disk, self.spare_disk,
                self.volume, self.of_disk, self.of_volume)


@dataclasses.dataclass
class Restart:
    """The service upgraded or downgraded next, killed in the middle of its
    work when it is restarted for that; the next mix cleans up with the
    other release.  nova-compute and cinder-volume die while making a
    chain (the clone made, not yet sealed); glance-api while deleting a
    chain image (removed, its retired disk not yet released)."""

    role: str
    release: str
    image: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    disk: str = dataclasses.field(
        default_factory=lambda: f"{uuid.uuid4()}_disk")
    chain: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    location: str = ""

    @property
    def pool(self) -> str:
        return POOLS.volumes if self.role == "cinder" else POOLS.vms

    @property
    def step(self) -> str:
        return "seal" if self.role != "glance" else f"release {POOLS.vms}/*"

    def names(self) -> tuple[str, ...]:
        return (self.image, self.disk, self.chain)


class Ledger:
    """What the services did in one mix, counted by what they are asked
    to do; every count is of calls that succeeded (a refusal fails the
    test)."""

    def __init__(self) -> None:
        self.did: collections.Counter = collections.Counter()

    def note(self, who: str, what: str, n: int = 1) -> None:
        self.did[who, what] += n

    def get(self, who: str, what: str) -> int:
        return self.did[who, what]

    def what(self, who: str) -> str:
        return ", ".join(what for w, what in self.did if w == who) or "-"


def begin(cloud, mix: Mix, fam: Family, ledger: Ledger) -> None:
    """Upload, boot, chain, delete the image (retired), retire the disk."""
    stock = cloud.stock
    glance = cloud.service("glance", mix.glance)
    nova = cloud.service("nova", mix.nova)
    cinder = cloud.service("cinder", mix.cinder)
    base = pattern(fam.base, SIZE)
    for image in (fam.base, fam.spare)[:2 if fam.with_spare else 1]:
        made = glance.call("add", image_id=image, seed=image, size=SIZE)
        assert made["size"] == SIZE
        fam.locations[image] = made["location"]
        ledger.note("glance", "add")
    fam.expected[fam.base] = digest(base)
    read(cloud, mix, fam, [fam.base], ledger)
    # Nova boots an instance, Cinder makes a volume: clones of the image
    stock.clone(POOLS.images, fam.base, "snap", POOLS.vms, fam.disk)
    stock.clone(POOLS.images, fam.base, "snap", POOLS.volumes, fam.volume)
    for pool, name in ((POOLS.vms, fam.disk), (POOLS.volumes, fam.volume)):
        stock.write(pool, name, pattern(name, WRITTEN))
    made = nova.call("snapshot", source=f"{POOLS.vms}/{fam.disk}",
                     image_id=fam.of_disk)
    ledger.note("nova", made["path"])
    fam.locations[fam.of_disk] = made["location"]
    fam.expected[fam.of_disk] = digest(pattern(fam.disk, WRITTEN)
                                       + base[WRITTEN:])
    made = cinder.call("snapshot", source=f"{POOLS.volumes}/{fam.volume}",
                       image_id=fam.of_volume)
    ledger.note("cinder", made["path"])
    fam.locations[fam.of_volume] = made["location"]
    fam.expected[fam.of_volume] = digest(pattern(fam.volume, WRITTEN)
                                         + base[WRITTEN:])
    # Glance deletes the image both were booted from: retired, not refused
    glance.call("delete", location=fam.locations[fam.base])
    assert not stock.exists(POOLS.images, fam.base)
    assert stock.exists(POOLS.images, fam.base + RETIRED)
    ledger.note("glance", "retired")
    # the instance is destroyed: its disk, which a chain needs, is retired
    outcome = nova.call("retire", pool=POOLS.vms, name=fam.disk)["decision"]
    assert stock.exists(POOLS.vms, fam.disk + RETIRED), outcome
    ledger.note("nova", "retire")
    if not fam.with_spare:
        return
    # an instance without chains, destroyed by Nova's own code after its
    # image was deleted: the retired image is cleanup's to reclaim
    stock.clone(POOLS.images, fam.spare, "snap", POOLS.vms, fam.spare_disk)
    glance.call("delete", location=fam.locations[fam.spare])
    assert stock.exists(POOLS.images, fam.spare + RETIRED)
    ledger.note("glance", "retired")
    stock.remove(POOLS.vms, fam.spare_disk)


def read(cloud, mix: Mix, fam: Family, images: list[str],
         ledger: Ledger) -> None:
    """Glance of either release reads the bytes written."""
    for release in (mix.glance, mix.other(mix.glance)):
        reader = cloud.service("glance", release)
        for image in images:
            got = reader.call("get", location=fam.locations[image])
            assert (got["size"], got["sha256"]) == (SIZE,
                                                    fam.expected[image]), \
                (reader, image, fam.mix)
            ledger.note("read", release)


def finish(cloud, mix: Mix, fam: Family, ledger: Ledger) -> None:
    """Read with both releases, retire the volume, delete the chains."""
    stock = cloud.stock
    glance = cloud.service("glance", mix.glance)
    cinder = cloud.service("cinder", mix.cinder)
    read(cloud, mix, fam, [fam.of_disk, fam.of_volume], ledger)
    outcome = cinder.call("retire", pool=POOLS.volumes,
                          name=fam.volume)["decision"]
    assert stock.exists(POOLS.volumes, fam.volume + RETIRED), outcome
    ledger.note("cinder", "retire")
    glance.call("delete", location=fam.locations[fam.of_disk])
    assert not stock.exists(POOLS.images, fam.of_disk)
    assert not stock.exists(POOLS.vms, fam.disk + RETIRED)
    ledger.note("glance", "removed")
    glance.call("delete", location=fam.locations[fam.of_volume])
    assert not stock.exists(POOLS.images, fam.of_volume)
    assert not stock.exists(POOLS.volumes, fam.volume + RETIRED)
    assert not stock.exists(POOLS.images, fam.base + RETIRED)
    ledger.note("glance", "removed")


def clean_up(cloud, mix: Mix, ledger: Ledger,
             families: list[Family]) -> None:
    """The operator's cleanup of the other release, then of glance's: the
    first reclaims the images Nova's own destroy left to it, the second
    finds nothing to do."""
    first = mix.other(mix.glance)
    expected = {f"{POOLS.images}/{fam.spare}{RETIRED}" for fam in families
                if fam.with_spare}
    for release in (first, mix.glance):
        rows = cloud.cleanup(release)
        done = {row["target"] for row in rows if row["result"] == "done"}
        assert all(row["result"] in ("done", "-") for row in rows), rows
        assert done == (expected if release == first else set()), rows
        ledger.note("cleanup", release, len(done))


def restart(cloud, mix: Mix, following: Mix, ledger: Ledger) -> Restart:
    """Kill the service that ``following`` runs at another release in the
    middle of its work, as its restart may."""
    (role,) = [r for r in ("glance", "nova", "cinder")
               if getattr(mix, r) != getattr(following, r)]
    dying = cloud.restarted(role, getattr(mix, role))
    killed = Restart(role, getattr(mix, role))
    stock = cloud.stock
    glance = cloud.service("glance", mix.glance)
    made = glance.call("add", image_id=killed.image, seed=killed.image,
                       size=SIZE)
    killed.location = made["location"]
    ledger.note("glance", "add")
    stock.clone(POOLS.images, killed.image, "snap", killed.pool, killed.disk)
    source = f"{killed.pool}/{killed.disk}"
    if role == "glance":
        nova = cloud.service("nova", mix.nova)
        nova.call("snapshot", source=source, image_id=killed.chain)
        nova.call("retire", pool=killed.pool, name=killed.disk)
        ledger.note("nova", "chain")
        ledger.note("nova", "retire")
        dying.call_dying("delete_dying", name=killed.chain,
                         die_at=killed.step)
        assert not stock.exists(POOLS.images, killed.chain)
        assert stock.exists(killed.pool, killed.disk + RETIRED)
    else:
        dying.call_dying("snapshot_dying", source=source,
                         image_id=killed.chain, die_at=killed.step)
        assert stock.exists(POOLS.images, killed.chain)
    ledger.note("killed", f"{role} {killed.release} "
                + ("mid-delete" if role == "glance" else "mid-chain"))
    return killed


def recover(cloud, mix: Mix, killed: Restart, ledger: Ledger) -> None:
    """The other release's cleanup finishes what the killed service began
    (a delete) or rolls it back (a chain); then Nova destroys the instance
    and Glance deletes the image, which nothing clones any more."""
    stock = cloud.stock
    release = mix.other(killed.release)
    rows = cloud.cleanup(release)
    done = {row["target"] for row in rows if row["result"] == "done"}
    # the interrupted operation; a killed delete also leaves its chain's
    # source snapshot to trim (the journal's link names it)
    assert f"{POOLS.images}/{killed.chain}" in done, rows
    assert done <= {f"{POOLS.images}/{killed.chain}",
                    f"{killed.pool}/{killed.disk}@rbd_tracked-{killed.chain}"
                    }, rows
    assert not stock.exists(POOLS.images, killed.chain)
    if killed.role == "glance":
        assert not stock.exists(killed.pool, killed.disk + RETIRED)
    else:
        assert stock.snapshots(killed.pool, killed.disk) == []
        stock.remove(killed.pool, killed.disk)
    cloud.service("glance", mix.glance).call("delete",
                                             location=killed.location)
    assert not stock.exists(POOLS.images, killed.image)
    assert not stock.exists(POOLS.images, killed.image + RETIRED)
    ledger.note("glance", "removed")
    ledger.note("recovered", f"{killed.role} {killed.release}: cleanup "
                f"{release}")


def leftovers(cloud, before: dict[str, set[str]],
              keep: list) -> tuple[list[str], list[str]]:
    """(kept on purpose, left) of what the pools hold beyond ``before``."""
    kept, left = [], []
    for where, held in cloud.inventory().items():
        for item in sorted(held - before[where]):
            mine = any(n in item for fam in keep for n in fam.names())
            (kept if mine else left).append(f"{where}: {item}")
    return kept, left


def test_rolling_upgrade_and_back(cloud, record_property):
    before = cloud.inventory()
    rows = []
    carried: Family | None = None
    killed: Restart | None = None
    started = time.monotonic()
    try:
        for number, mix in enumerate(MIXES):
            ledger = Ledger()
            last = number == len(MIXES) - 1
            if number == POLICY_KEPT_FROM:
                cloud.keep_policy()
            if killed is not None:
                recover(cloud, mix, killed, ledger)
            own = Family(mix)
            begin(cloud, mix, own, ledger)
            finish(cloud, mix, own, ledger)
            handed_on = None if last else Family(mix, with_spare=False)
            if handed_on is not None:
                begin(cloud, mix, handed_on, ledger)
            if carried is not None:
                finish(cloud, mix, carried, ledger)
            clean_up(cloud, mix, ledger, [own, handed_on] if handed_on
                     else [own])
            killed = None if last else restart(cloud, mix, MIXES[number + 1],
                                               ledger)
            kept, left = leftovers(cloud, before,
                                   [f for f in (handed_on, killed) if f])
            rows.append((mix, ledger, kept, left))
            assert not left, (mix, left)
            carried = handed_on
    finally:
        # printed at the end of the run, from a pytest-xdist worker too
        record_property("summary", matrix(rows, time.monotonic() - started,
                                          cloud))
    assert carried is None and killed is None


COLUMNS = ("#", "glance", "nova", "cinder", "policy", "recovered", "glance did",
           "nova did", "cinder did", "reads old/new", "cleanup", "killed",
           "left", "handed on")


def matrix(rows, seconds: float, cloud) -> str:
    """The matrix as it ran: one row per mix, in order."""
    table = [COLUMNS, *(_row(number, *row)
                        for number, row in enumerate(rows, 1))]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width)
                       for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in table]
    spent: collections.Counter = collections.Counter()
    raced = []
    for worker in cloud.workers.values():
        for op, s in worker.seconds.items():
            spent[f"{worker.role} {op}"] += s
        raced += [f"{worker} {op} {n}x" for op, n in worker.raced.items()]
    return "\n".join([
        f"Rolling upgrade, {len(rows)} mixes in {seconds:.1f} s "
        "(old: the previous release, new: the tree; the old venv: "
        f"{cloud.old.seconds:.1f} s):",
        *lines,
        "the previous release died in librbd's open/close race "
        "(doc/source/known-issues.rst; respawned and asked again): "
        + (", ".join(raced) or "never"),
        "refused: none (a refusal fails the test); "
        "time in: " + ", ".join(f"{what} {s:.1f} s"
                                for what, s in spent.most_common())])


def _row(number: int, mix: Mix, ledger: Ledger, kept: list[str],
         left: list[str]) -> tuple[str, ...]:
    removed, retired = (ledger.get("glance", "removed"),
                        ledger.get("glance", "retired"))
    first = mix.other(mix.glance)
    return (
        str(number), mix.glance, mix.nova, mix.cinder,
        "cluster" if number - 1 >= POLICY_KEPT_FROM else "local",
        ledger.what("recovered"),
        f"add {ledger.get('glance', 'add')}, delete {removed + retired} "
        f"({retired} retired)",
        *(f"chain {ledger.get(role, 'chain')}, "
          f"retire {ledger.get(role, 'retire')}" for role in ("nova", "cinder")),
        f"{ledger.get('read', OLD)}/{ledger.get('read', NEW)}",
        f"{first} {ledger.get('cleanup', first)}, "
        f"{mix.glance} {ledger.get('cleanup', mix.glance)}",
        ledger.what("killed"), str(len(left)), str(len(kept)))
