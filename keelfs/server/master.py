"""A master: ``python -m keelfs.server.master``, members of one or more data shards.

The same command as ``keelfs master`` (``keelfs.server.roles``), in this module's own
spelling: ``--listen`` is the Raft address and ``--client-listen`` the client address::

    python -m keelfs.server.master --shard shard-1 --id 11 --listen 127.0.0.1:7110 \\
        --client-listen 127.0.0.1:7111 --data /var/keelfs/m11 \\
        --config-servers 127.0.0.1:7101,127.0.0.1:7201 \\
        --peers 11=127.0.0.1:7110,12=127.0.0.1:7120,13=127.0.0.1:7130   # first start only

Serves ``keelfs.meta.v1.Namespace`` (and ``Node``) on the client address; Raft on the Raft
address. What it runs: ``keelfs.server.master_process``.
"""

from __future__ import annotations

import sys

from keelfs.server.roles import run_module

if __name__ == "__main__":
    sys.exit(run_module("master"))
