"""glance_store backend for Ceph RBD that owns clone chains instead of copying."""

__version__ = "0.1.0"
