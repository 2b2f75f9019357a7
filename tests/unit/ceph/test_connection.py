"""The adapter's connection handling, with stand-in rados/rbd modules.

The adapter takes the rados and rbd modules as arguments; these stand-ins
implement just what connecting needs.  Everything else is proven against the
real cluster in tests/functional.
"""

import types

import pytest

from glance_rbd_tracked import ceph
from glance_rbd_tracked import errors
from glance_rbd_tracked.ceph import connection as connection_mod
from glance_rbd_tracked.ceph import data


class FakeRados:
    def __init__(self, fsids):
        self.fsids = list(fsids)
        self.clients = []
        self.Error = type("Error", (Exception,), {})

    def Rados(self, conffile, rados_id, conf):
        module = self

        class Client:
            shut = False

            def connect(self, timeout=0):
                self.connected_with = timeout

            def get_fsid(self):
                return module.fsids.pop(0) if len(module.fsids) > 1 \
                    else module.fsids[0]

            def shutdown(self):
                self.shut = True

        client = Client()
        client.conf = conf
        self.clients.append(client)
        return client


def fake_modules(fsids):
    rados = FakeRados(fsids)
    rbd = types.SimpleNamespace(Error=type("RbdError", (Exception,), {}))
    for name in ("ImageNotFound", "ImageExists", "ImageBusy",
                 "ImageHasSnapshots", "NoSpace", "DiskQuotaExceeded"):
        setattr(rbd, name, type(name, (rbd.Error,), {}))
    rados.NoSpace = type("NoSpace", (rados.Error,), {})
    return rados, rbd


def test_zero_fsid_right_after_connect_is_waited_out():
    modules = fake_modules([connection_mod.ZERO_FSID, connection_mod.ZERO_FSID,
                            "6f1c1c4e-real"])
    cluster = connection_mod.Connection("ceph.conf", rados_rbd=modules)
    assert cluster.fsid() == "6f1c1c4e-real"


def test_a_zero_fsid_that_stays_is_an_error_not_a_location():
    modules = fake_modules([connection_mod.ZERO_FSID])
    cluster = connection_mod.Connection("ceph.conf", rados_rbd=modules,
                                        fsid_wait=0.05)
    with pytest.raises(errors.ClusterError, match="zero fsid"):
        cluster.fsid()
    assert modules[0].clients[0].shut


def test_one_connection_is_opened_lazily_and_kept():
    modules = fake_modules(["f"])
    cluster = connection_mod.Connection("ceph.conf", rados_rbd=modules)
    assert modules[0].clients == []
    first = cluster.client()
    assert cluster.client() is first
    with cluster._using(first):
        cluster.reset(first)
        # another thread still uses it: not shut down under its feet
        assert not first.shut and cluster.client() is not first
    assert first.shut  # shut down when its last user let go


def test_timeout_becomes_librados_timeouts():
    modules = fake_modules(["f"])
    connection_mod.Connection("c", rados_rbd=modules, timeout=7).client()
    conf = modules[0].clients[0].conf
    assert conf["rados_osd_op_timeout"] == conf["client_mount_timeout"] == "7"


@pytest.mark.parametrize("connect_timeout, applied", [
    (None, "7"), (0, "7"), (-1, "7"), (12, "12")])
def test_connecting_is_bounded_by_the_timeout_unless_set_above_0(
        connect_timeout, applied):
    # Cinder's rados_connect_timeout defaults to -1, glance_store's to 0
    modules = fake_modules(["f"])
    connection_mod.Connection("c", rados_rbd=modules, timeout=7,
                              connect_timeout=connect_timeout).client()
    (client,) = modules[0].clients
    assert client.conf["client_mount_timeout"] == applied
    assert client.connected_with == int(applied)


def test_shared_returns_one_cluster_per_setting():
    a = ceph.shared("/x/ceph.conf", None)
    assert ceph.shared("/x/ceph.conf", None) is a
    assert ceph.shared("/x/ceph.conf", "glance") is not a


def test_grown_doubles_up_to_8_gib_steps():
    assert data._grown(8 << 20, 9 << 20) == 16 << 20
    assert data._grown(16 << 30, (16 << 30) + 1) == 24 << 30


def test_every_open_cluster_is_shut_down_at_exit():
    # librados threads that outlive interpreter finalization crash it
    modules = fake_modules(["f"])
    opened = connection_mod.Connection("ceph.conf", rados_rbd=modules)
    opened.client()
    connection_mod.Connection("ceph.conf", rados_rbd=modules)  # never connected
    connection_mod._close_all()
    assert [c.shut for c in modules[0].clients] == [True]
