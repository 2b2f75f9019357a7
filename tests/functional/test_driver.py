"""The glance_store driver against the real cluster."""

import contextlib
import hashlib
import io
import os
import time
import uuid

from glance_store import exceptions
import pytest
import rbd

from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import schema
from glance_rbd_tracked.ceph import connection
from tests.functional.conftest import location_of
from tests.functional.conftest import make_store
from tests.functional.conftest import read_all
from tests.functional.conftest import upload

MiB = 1 << 20


def payload(size, seed=0):
    return (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]


@pytest.mark.parametrize("announced", ["known", "unknown"])
def test_add_streams_hashes_and_snapshots(store, operator, image_id, announced):
    data = payload(19 * MiB + 123)
    size = len(data) if announced == "known" else 0
    uri, written, md5, multihash, meta = upload(store, image_id, data, size)

    fsid = store.ceph.fsid()
    assert fsid != connection.ZERO_FSID
    assert uri == f"rbd://{fsid}/images/{image_id}/snap"
    assert written == len(data)
    assert md5 == hashlib.md5(data).hexdigest()
    assert multihash == hashlib.sha512(data).hexdigest()
    assert meta == {}
    assert store.get_size(location_of(store, uri)) == len(data)
    assert read_all(store, uri) == data
    state = store.ceph.images.state("images", image_id)
    assert [(s.name, s.protected) for s in state.snaps] == [("snap", True)]
    assert state.records.owner.kind == schema.Kind.UPLOAD
    assert state.records.owner.image_id == state.image_id


def test_add_zero_length(store, image_id):
    uri, written, md5, _, _ = upload(store, image_id, b"")
    assert written == 0 and md5 == hashlib.md5(b"").hexdigest()
    assert store.get_size(location_of(store, uri)) == 0
    assert read_all(store, uri) == b""


def test_add_thin_skips_zero_chunks(ceph_conf, image_id):
    thin = make_store(ceph_conf, rbd_thin_provisioning=True,
                      rbd_store_chunk_size=1)
    data = payload(MiB) + bytes(6 * MiB) + payload(MiB, 1)
    uri, written, _, _, _ = upload(thin, image_id, data)
    assert written == len(data)
    assert read_all(thin, uri) == data
    with thin.ceph.connection.ioctx("images") as ioctx, \
            rbd.Image(ioctx, image_id, snapshot="snap",
                      read_only=True) as image:
        extents = []
        image.diff_iterate(0, image.size(), None,
                           lambda off, n, exists: extents.append(
                               (off, n, exists)))
    allocated = sum(n for _, n, exists in extents if exists)
    assert allocated == 2 * MiB


@pytest.mark.parametrize("announced_delta", [-1, +1])
def test_size_mismatch_is_invalid_and_leaves_nothing(store, operator, image_id,
                                                     announced_delta):
    data = payload(3 * MiB)
    with pytest.raises(exceptions.Invalid):
        upload(store, image_id, data, len(data) + announced_delta)
    assert not operator.exists("images", image_id)


def test_failing_reader_leaves_nothing(store, operator, image_id):
    class Broken(io.RawIOBase):
        def __init__(self):
            self.calls = 0

        def read(self, n=-1):
            self.calls += 1
            if self.calls > 2:
                raise OSError("client went away")
            return b"y" * n

    with pytest.raises(IOError):
        store.add(image_id, Broken(), 100 * MiB, "sha512")
    assert not operator.exists("images", image_id)


def test_duplicate_is_refused_and_untouched(store, image_id):
    data = payload(MiB)
    uri, *_ = upload(store, image_id, data)
    with pytest.raises(exceptions.Duplicate):
        upload(store, image_id, payload(MiB, 2))
    assert read_all(store, uri) == data


def test_get_honours_offset_and_chunk_size(store, image_id):
    data = payload(5 * MiB + 7)
    uri, *_ = upload(store, image_id, data)
    loc = location_of(store, uri)
    chunks, size = store.get(loc, offset=MiB + 3, chunk_size=MiB // 2)
    chunks = list(chunks)
    assert size == len(data)
    assert b"".join(chunks) == data[MiB + 3:]
    assert max(map(len, chunks)) == MiB // 2
    chunks, _ = store.get(loc, offset=len(data) - 5)
    assert b"".join(chunks) == data[-5:]


def test_get_missing_image_is_not_found(store):
    fsid = store.ceph.fsid()
    loc = location_of(store, f"rbd://{fsid}/images/{uuid.uuid4()}/snap")
    with pytest.raises(exceptions.NotFound):
        store.get(loc)
    with pytest.raises(exceptions.NotFound):
        store.get_size(loc)


def test_delete_without_clones_removes_at_once(store, operator, image_id):
    uri, *_ = upload(store, image_id, payload(MiB))
    store.delete(location_of(store, uri))
    assert not operator.exists("images", image_id)
    with pytest.raises(exceptions.NotFound):
        store.delete(location_of(store, uri))


def test_delete_with_clone_retires_then_reclaims(store, nova, image_id):
    data = payload(2 * MiB)
    uri, *_ = upload(store, image_id, data)
    disk = f"{uuid.uuid4()}_disk"
    nova.clone("images", image_id, "snap", "vms", disk)
    assert nova.clone_format_of("vms", disk) == nova.clone_format

    store.delete(location_of(store, uri))  # no InUseByStore: 204 for Glance

    retired = image_id + schema.RETIRED_SUFFIX
    assert not nova.exists("images", image_id)
    assert nova.exists("images", retired)
    state = store.ceph.images.state("images", retired)
    assert state.records.retired.original_name == image_id
    assert disk in state.records.retired.reason
    # The instance disk still reads its parent's data.
    with nova.ioctx("vms") as ioctx, \
            rbd.Image(ioctx, disk, read_only=True) as image:
        assert image.read(0, len(data)) == data

    assert isinstance(lifecycle.reclaim(store.ceph, "images", retired),
                      lifecycle.core.Keep)
    assert nova.exists("images", retired)
    nova.remove("vms", disk)
    assert isinstance(lifecycle.reclaim(store.ceph, "images", retired),
                      lifecycle.core.Remove)
    assert not nova.exists("images", retired)


def test_inherited_records_are_ignored(store, nova, operator, image_id):
    uri, *_ = upload(store, image_id, payload(MiB))
    child = f"child-{uuid.uuid4()}"
    nova.clone("images", image_id, "snap", "images", child)
    # The clone carries its parent's owner record ...
    assert schema.OWNER_KEY in operator.metadata("images", child)
    state = store.ceph.images.state("images", child)
    # ... which names the parent, so it does not make the clone ours.
    assert state.records.owner is None
    assert state.records.inherited == (schema.OWNER_KEY,)
    fsid = store.ceph.fsid()
    with pytest.raises(exceptions.StoreDeleteNotSupported):
        store.delete(location_of(store, f"rbd://{fsid}/images/{child}/snap"))
    assert operator.exists("images", child)
    operator.remove("images", child)
    store.delete(location_of(store, uri))


@pytest.mark.parametrize("where", ["foreign-name", "other-pool", "other-cluster"])
def test_foreign_images_are_never_removed(store, operator, where):
    fsid = store.ceph.fsid()
    name, pool = f"{uuid.uuid4()}", "images"
    if where == "foreign-name":
        name = f"user-volume-{uuid.uuid4()}"
    if where == "other-pool":
        pool = "vms"
    operator.create(pool, name, snaps=["snap"])
    if where == "other-cluster":
        fsid = str(uuid.uuid4())
    with pytest.raises(exceptions.StoreDeleteNotSupported):
        store.delete(location_of(store, f"rbd://{fsid}/{pool}/{name}/snap"))
    assert operator.exists(pool, name)


def test_stock_driver_images_are_adopted(ceph_conf, store, nova, image_id):
    from glance_store._drivers import rbd as stock_rbd
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    conf([], project="stock", default_config_files=[])
    stock = stock_rbd.Store(conf)
    conf.set_override("rbd_store_ceph_conf", ceph_conf, group="glance_store")
    # unset, glance_store connects as str(None): client.None, no key on cephx
    conf.set_override("rbd_store_user", "admin", group="glance_store")
    stock.configure(re_raise_bsc=True)
    data = payload(MiB)
    uri, *_ = stock.add(image_id, io.BytesIO(data), len(data), "sha512")
    assert read_all(store, uri) == data

    disk = f"{uuid.uuid4()}_disk"
    nova.clone("images", image_id, "snap", "vms", disk)
    store.delete(location_of(store, uri))
    retired = image_id + schema.RETIRED_SUFFIX
    state = store.ceph.images.state("images", retired)
    assert state.records.owner.kind == "stock-adopted"
    nova.remove("vms", disk)
    lifecycle.reclaim(store.ceph, "images", retired)
    assert not nova.exists("images", retired)

    second = str(uuid.uuid4())
    uri, *_ = stock.add(second, io.BytesIO(data), len(data), "sha512")
    store.delete(location_of(store, uri))
    assert not nova.exists("images", second)


@contextlib.contextmanager
def quota_pool(rados_client, operator, max_bytes):
    """A new RBD pool of its own whose quota is ``max_bytes``."""
    pool = "quota-" + uuid.uuid4().hex[:8]
    rados_client.create_pool(pool)
    try:
        with operator.ioctx(pool) as ioctx:
            rbd.RBD().pool_init(ioctx, True)
        _mon(rados_client, {"prefix": "osd pool set-quota", "pool": pool,
                            "field": "max_bytes", "val": str(max_bytes)})
        yield pool
    finally:
        rados_client.delete_pool(pool)


def test_storage_full_fails_fast_and_leaves_nothing(ceph_conf, operator,
                                                    rados_client, image_id):
    with quota_pool(rados_client, operator, MiB) as pool:
        with operator.ioctx(pool) as ioctx:
            ioctx.write_full("filler", payload(2 * MiB))
        _wait_for_full_flag(rados_client, pool)
        small = make_store(ceph_conf, pool=pool)
        with pytest.raises(exceptions.StorageFull,
                           match="the pool's quota is reached"):
            upload(small, image_id, payload(8 * MiB), 0)
        assert not operator.exists(pool, image_id)


def test_an_announced_size_past_the_quota_is_refused_before_any_write(
        ceph_conf, operator, rados_client, image_id):
    """Ceph flags a pool full only once the mgr has reported its usage:
    a 64 MiB upload into a pool with a 20 MiB quota was taken whole.  The
    announced size is checked against the quota and MAX AVAIL first."""
    with quota_pool(rados_client, operator, 20 * MiB) as pool:
        small = make_store(ceph_conf, pool=pool)
        deadline = time.monotonic() + 30
        while (space := small.ceph.space.of(pool)) is None:
            assert time.monotonic() < deadline, "the mgr never reported it"
            time.sleep(0.2)  # a new pool: until then nothing is checked
        # (pool_init's rbd_info counts once the mgr has reported it)
        assert space.quota == 20 * MiB and space.used < MiB, space
        with pytest.raises(exceptions.StorageFull,
                           match=f"do not fit in the quota of pool '{pool}'"):
            upload(small, image_id, payload(64 * MiB))
        assert operator.names(pool) == set()
        assert small.ceph.journal.entries(pool) == {}
        uri, *_ = upload(small, image_id, payload(4 * MiB))  # this one fits
        small.delete(location_of(small, uri))


def _wait_for_full_flag(client, pool, timeout=60):
    import json
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _ret, out, _ = client.mon_command(
            json.dumps({"prefix": "osd dump", "format": "json"}), b"")
        flags = [p["flags_names"] for p in json.loads(out)["pools"]
                 if p["pool_name"] == pool]
        if flags and "full_quota" in flags[0]:
            return
        time.sleep(0.2)
    pytest.fail(f"pool {pool} never reached its quota")


def _mon(client, cmd):
    import json
    ret, _out, err = client.mon_command(json.dumps(cmd), b"")
    assert ret == 0, err


def test_one_connection_shared_by_threads(store, image_id):
    # As many threads as glance-api's uWSGI worker runs (tools/glance-api-dev).
    # librbd 16.2.15 itself aborts now and then (std::system_error: Invalid
    # argument) when threads of one client open images at once: plain
    # rados/rbd, 8 threads x 640 opens, crashed about 1 run in 6 here.
    import concurrent.futures
    uri, *_ = upload(store, image_id, payload(MiB))
    loc = location_of(store, uri)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(lambda _: store.get_size(loc), range(16)))
    assert sizes == [MiB] * 16
    assert len({id(store.ceph.connection.client()) for _ in range(3)}) == 1


def test_reconnects_in_a_forked_child(store, image_id):
    uri, *_ = upload(store, image_id, payload(MiB))
    parent_client = store.ceph.connection.client()
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's librados instance
        try:
            ok = (store.get_size(location_of(store, uri)) == MiB
                  and store.ceph.connection.client() is not parent_client)
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_verifier_sees_every_byte_in_order(store, image_id):
    class Verifier:
        def __init__(self):
            self.digest = hashlib.sha256()

        def update(self, chunk):
            self.digest.update(chunk)

    data = payload(9 * MiB + 1)
    verifier = Verifier()
    store.add(image_id, io.BytesIO(data), len(data), "sha256",
              verifier=verifier)
    assert verifier.digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_loaded_by_glance_store_through_the_entry_point(ceph_conf, tmp_path):
    """As glance-api loads it: enabled_backends names the driver, which
    must also be a scheme, and the store must be reusable."""
    from glance_store import capabilities
    from glance_store import location as gs_location
    from glance_store import multi_backend
    from oslo_config import cfg
    path = tmp_path / "glance-api.conf"
    path.write_text("[DEFAULT]\nenabled_backends = fast:rbd_tracked\n"
                    "[glance_store]\ndefault_backend = fast\n"
                    f"[fast]\nrbd_store_ceph_conf = {ceph_conf}\n")
    conf = cfg.CONF  # glance_store's multi-backend API reads the global one
    conf.register_opt(cfg.DictOpt("enabled_backends"))
    conf([], project="glance-api", default_config_files=[str(path)])
    multi_backend.register_store_opts(conf)
    multi_backend.create_multi_stores(conf)
    store = multi_backend.get_store_from_store_identifier("fast")
    assert type(store).__module__ == "glance_rbd_tracked.driver"
    assert store.is_capable(capabilities.BitMasks.DRIVER_REUSABLE)
    assert store.is_capable(capabilities.BitMasks.READ_RANDOM)
    assert "rbd_tracked" in store.get_schemes()
    # reusable: glance-api gets the same instance for every request
    assert multi_backend.get_store_from_store_identifier("fast") is store
    loc = gs_location.get_location_from_uri_and_backend(
        f"rbd://{store.ceph.fsid()}/images/x/snap", "fast", conf=conf)
    assert loc.store_location.image == "x"
