import sys

from glance_rbd_tracked.cli import main

sys.exit(main())
