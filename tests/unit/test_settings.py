import re

import pytest

from glance_rbd_tracked import errors
from glance_rbd_tracked import settings


def conf(tmp_path, text, name="glance-api.conf"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_without_files_every_option_has_its_default():
    s = settings.load()
    # no ceph.conf: librados' own search (which honours $CEPH_CONF)
    assert (s.pool, s.ceph_conf, s.user) == ("images", None, None)
    assert s.policy.chain_pools == frozenset({"vms", "volumes"})
    assert s.policy.max_clone_depth == 5 and s.policy.adopt_stock_images
    assert s.chunk_size == 8 << 20


def test_single_store_reads_glance_store(tmp_path):
    path = conf(tmp_path, "[glance_store]\nrbd_store_pool = glance\n"
                          "rbd_store_user = glance\n"
                          "rbd_tracked_chain_pools = vms\n"
                          "rbd_tracked_adopt_stock_images = false\n")
    s = settings.load([path])
    assert (s.pool, s.user) == ("glance", "glance")
    assert s.policy.chain_pools == frozenset({"vms"})
    assert not s.policy.adopt_stock_images


MULTI = """[DEFAULT]
enabled_backends = cheap:file, fast:rbd_tracked, other:rbd_tracked
[glance_store]
default_backend = fast
[fast]
rbd_store_pool = fastpool
[other]
rbd_store_pool = otherpool
rbd_tracked_max_clone_depth = 2
"""


def test_multi_store_takes_the_named_backend(tmp_path):
    path = conf(tmp_path, MULTI)
    assert settings.load([path], backend="other").policy.max_clone_depth == 2
    assert settings.load([path]).pool == "fastpool"  # the default backend


def test_a_config_dir_is_read_like_glance_api_does(tmp_path):
    (tmp_path / "d").mkdir()
    conf(tmp_path / "d", MULTI.replace("default_backend = fast",
                                       "default_backend = cheap"), "x.conf")
    with pytest.raises(errors.ConfigError, match="name one with --backend"):
        settings.load(config_dirs=[str(tmp_path / "d")])
    s = settings.load(config_dirs=[str(tmp_path / "d")], backend="fast")
    assert s.pool == "fastpool"


@pytest.mark.parametrize("text, backend, message", [
    (MULTI, "cheap", "no rbd_tracked backend 'cheap'"),
    (MULTI, "nope", "no rbd_tracked backend 'nope'"),
    ("[DEFAULT]\nenabled_backends = cheap:file\n", None,
     "0 rbd_tracked backends"),
    ("[glance_store]\nrbd_tracked_max_clone_depth = 0\n", None,
     "rbd_tracked_max_clone_depth"),
])
def test_wrong_or_ambiguous_configuration_says_what(tmp_path, text, backend,
                                                     message):
    with pytest.raises(errors.ConfigError, match=message):
        settings.load([conf(tmp_path, text)], backend=backend)


def test_a_missing_or_malformed_file_is_a_config_error(tmp_path):
    missing = str(tmp_path / "nope.conf")
    with pytest.raises(errors.ConfigError, match=re.escape(missing)):
        settings.load([missing])
    broken = conf(tmp_path, "[glance_store\nrbd_store_pool = x\n",
                  "broken.conf")
    with pytest.raises(errors.ConfigError, match=re.escape(broken)):
        settings.load([broken])
    # enabled_backends is read (and its value checked) before the group
    with pytest.raises(errors.ConfigError, match="enabled_backends"):
        settings.load([conf(tmp_path, "[DEFAULT]\nenabled_backends = x\n")])



def test_a_directory_given_as_a_file_is_a_config_error(tmp_path):
    # oslo.config raises the OSError itself for anything but ENOENT, EACCES
    with pytest.raises(errors.ConfigError, match="Is a directory"):
        settings.load([str(tmp_path)])


def test_chain_policy_options_left_unset_are_the_clusters(tmp_path):
    from glance_rbd_tracked import policy
    s = settings.load([conf(tmp_path, "[glance_store]\n")])
    assert s.local == policy.Local()  # nothing set, no override
    s = settings.load([conf(tmp_path, "[glance_store]\n"
                                      "rbd_tracked_max_clone_depth = 3\n"
                                      "rbd_tracked_policy_override = true\n")])
    assert s.local == policy.Local(override=True, max_clone_depth=3)
    assert s.policy.max_clone_depth == 3
