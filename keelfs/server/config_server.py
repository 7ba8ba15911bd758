"""A config-group member: ``python -m keelfs.server.config_server``.

The same command as ``keelfs config-server`` (``keelfs.server.roles``), in this module's own
spelling: ``--listen`` is the Raft address and ``--client-listen`` the client address::

    python -m keelfs.server.config_server --id 1 --listen 127.0.0.1:7100 \\
        --client-listen 127.0.0.1:7101 --data /var/keelfs/c1 \\
        --peers 1=127.0.0.1:7100,2=127.0.0.1:7200,3=127.0.0.1:7300    # first start only

Serves ``keelfs.meta.v1.Config`` (and ``Node``) on the client address; Raft on the Raft
address. See ``keelfs.server.master_process`` for what it runs and ``keelfs.master.node`` for
what a node keeps.
"""

from __future__ import annotations

import sys

from keelfs.server.roles import run_module

if __name__ == "__main__":
    sys.exit(run_module("config_server"))
