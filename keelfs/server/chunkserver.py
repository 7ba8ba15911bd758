"""A chunk server: ``python -m keelfs.server.chunkserver``, the same command as
``keelfs chunkserver`` (``keelfs.server.roles``; what it runs is ``keelfs.server.chunk_process``).

::

    keelfs chunkserver --data /var/keelfs/cs0 --listen 127.0.0.1:7301 \\
        --config-servers 127.0.0.1:7101,127.0.0.1:7201

Stores block replicas and serves the data path on ``--listen``; registers with the config
group and reports to every master.
"""

from __future__ import annotations

import sys

from keelfs.server.roles import run_module

if __name__ == "__main__":
    sys.exit(run_module("chunkserver"))
