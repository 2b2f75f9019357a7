"""Configuration options.

The store reads glance_store's own ``rbd_store_*`` options (the very same
option objects, so registering both drivers never collides) and adds a few of
its own under the ``rbd_tracked_`` prefix.  Long explanations live in
``doc/source/configuration.rst``.
"""

from __future__ import annotations

from oslo_config import cfg

TRACKED_OPTS = [
    cfg.IntOpt("rbd_tracked_write_depth", default=4, min=1,
               help="Chunks written concurrently by add() while the next "
                    "chunk is hashed."),
    cfg.IntOpt("rbd_tracked_read_ahead", default=2, min=1,
               help="Chunks read ahead by get()."),
    cfg.ListOpt("rbd_tracked_chain_pools",
                help="Pools of instance disks and volumes that the store may "
                     "snapshot into chains and reclaim retired images from. "
                     "Chain policy: unset, the cluster's (see doctor)."),
    cfg.IntOpt("rbd_tracked_max_clone_depth", min=1,
               help="Chains deeper than this are reported for flattening "
                    "(glance-rbd-tracked flatten), never flattened inside "
                    "a request. Chain policy: unset, the cluster's."),
    cfg.IntOpt("rbd_tracked_op_timeout", default=30, min=1,
               help="Seconds any call into Ceph (an OSD or monitor "
                    "operation, connecting), or a Glance request of "
                    "'glance-rbd-tracked snapshot --register', may take "
                    "before the store gives up with an error; never "
                    "unbounded."),
    cfg.BoolOpt("rbd_tracked_adopt_stock_images",
                help="Treat images in the store's pool that glance_store's "
                     "stock rbd driver wrote (named by an image id, "
                     "snapshot 'snap') as owned by this store. Chain "
                     "policy: unset, the cluster's."),
    cfg.BoolOpt("rbd_tracked_policy_override", default=False,
                help="Run with the chain policy options set here instead of "
                     "the one kept in the cluster (doctor reports it)."),
]


def stock_opts() -> list[cfg.Opt]:
    """glance_store's rbd options, the same objects its driver registers."""
    from glance_store._drivers import rbd
    return list(rbd._RBD_OPTS)


def store_opts() -> list[cfg.Opt]:
    return stock_opts() + TRACKED_OPTS


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Entry point for oslo-config-generator (``oslo.config.opts``)."""
    return [("glance_store", store_opts())]
