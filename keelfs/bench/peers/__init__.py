"""The systems keelfs is measured beside (``keelfs bench compare``): each peer is installed
into an environment of its own, run on loopback in a temporary directory, and stopped by pid."""
