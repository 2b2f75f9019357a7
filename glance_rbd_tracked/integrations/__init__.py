"""Where real Nova, Cinder and the Glance API call into the store.

* :mod:`.nova`: a launcher for nova-compute (Nova has no plug point for its
  libvirt image backend) that makes instance snapshots chains and retires
  destroyed disks;
* :mod:`.cinder`: ``TrackedRBDDriver``, a subclass of Cinder's RBD driver
  that makes images from volumes as chains and retires deleted volumes;
* :mod:`.glance`: create an image and register a location through the
  Glance API with openstacksdk (``glance-rbd-tracked snapshot --register``);
* :mod:`.common`: what they share; it imports neither Nova nor Cinder.

Each integration checks the parameters (names and kinds) of what it wraps
or calls, not the release number; where one lacks what it needs it leaves
Nova or Cinder as they are and says so in one log line.  Only the store's
own errors lead to a fall-back.  See ``doc/source/nova-cinder.rst``.
"""
