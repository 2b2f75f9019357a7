"""snapshot --register without Glance: its plan and its usage errors, on
the in-memory cluster."""

import http.server
import json
import threading
import time

import pytest

from glance_rbd_tracked import cli
from tests.fakes import FakeCeph
from tests.fakes import World


def run(fake, *argv):
    return cli.main(["snapshot", "--register", "--format", "json", *argv],
                    ceph=fake)


def test_the_plan_creates_nothing(capsys):
    fake = FakeCeph(World())
    fake.world.create("vms", "disk", b"data")
    fake.world.create("images", "taken", b"data")
    assert run(fake, "vms/disk", "vms/disk=taken", "images/x") == 1
    rows = json.loads(capsys.readouterr().out)
    assert [(r["image_id"], r["result"].split(":")[0]) for r in rows] == [
        ("(new)", "planned"), ("taken", "refused"), ("(new)", "refused")]
    assert "exists already" in rows[1]["result"]
    assert sorted(fake.world.names("images")) == ["taken"]
    assert fake.images.state("vms", "disk").snaps == ()


def test_usage_errors_exit_2():
    fake = FakeCeph(World())
    assert run(fake, "disk-without-pool") == 2
    assert run(fake, "vms/disk", "--paths", "teleport") == 2
    # without --register the image id stays required
    assert cli.main(["snapshot", "vms/disk"], ceph=fake) == 2


class SilentGlance(http.server.BaseHTTPRequestHandler):
    """Glance that shows its API version, then takes requests and never
    answers them."""

    def do_GET(self):
        if self.path != "/":
            return self.hang()
        port = self.server.server_address[1]
        body = json.dumps({"versions": [{
            "id": "v2.16", "status": "CURRENT", "links": [
                {"rel": "self", "href": f"http://127.0.0.1:{port}/v2/"}]}]})
        self.send_response(300)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_POST(self):
        self.hang()

    def hang(self):
        self.server.done.wait(60)

    def log_message(self, *args):
        pass


@pytest.fixture
def silent_glance(tmp_path, monkeypatch):
    """A cloud (clouds.yaml, no Keystone) whose Glance never answers."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SilentGlance)
    server.done = threading.Event()  # set: the handlers let go
    threading.Thread(target=server.serve_forever, daemon=True).start()
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(f"""clouds:
  silent:
    auth_type: none
    image_endpoint_override: http://127.0.0.1:{server.server_address[1]}/
""")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    yield "silent"
    server.done.set()
    server.shutdown()
    server.server_close()


def test_a_glance_that_never_answers_is_given_up_after_the_timeout(
        tmp_path, silent_glance, capsys):
    conf = tmp_path / "glance-api.conf"
    conf.write_text("[glance_store]\nrbd_tracked_op_timeout = 1\n")
    fake = FakeCeph(World())
    fake.world.create("vms", "disk", b"data")
    began = time.monotonic()
    assert cli.main(["--config-file", str(conf), "snapshot", "--register",
                     "--execute", "--os-cloud", silent_glance,
                     "vms/disk"], ceph=fake) == 1
    assert time.monotonic() - began < 10
    err = capsys.readouterr().err
    assert "creating the image: Glance could not be reached" in err
    assert "/v2/images timed out" in err
    assert fake.images.state("vms", "disk").snaps == ()  # no chain made
