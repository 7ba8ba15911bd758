"""A config-group member: ``python -m keelfs.server.config_server``.

::

    python -m keelfs.server.config_server --id 1 --listen 127.0.0.1:7100 \\
        --client-listen 127.0.0.1:7101 --data /var/keelfs/c1 \\
        --peers 1=127.0.0.1:7100,2=127.0.0.1:7200,3=127.0.0.1:7300    # first start only

Serves ``keelfs.meta.v1.Config`` (and ``Node``) on the client address; Raft on ``--listen``.
``--shard`` also hosts data-shard members in the same process. See ``keelfs.server.master_process``
for the lifecycle and ``keelfs.master.node`` for what a node keeps.
"""

from __future__ import annotations

import sys

from keelfs.server.master_process import main

if __name__ == "__main__":
    sys.exit(main("config"))
