"""A master: ``python -m keelfs.server.master``, members of one or more data shards.

::

    python -m keelfs.server.master --shard shard-1 --id 11 --listen 127.0.0.1:7110 \\
        --client-listen 127.0.0.1:7111 --data /var/keelfs/m11 \\
        --config-servers 127.0.0.1:7101,127.0.0.1:7201 \\
        --peers 11=127.0.0.1:7110,12=127.0.0.1:7120,13=127.0.0.1:7130   # first start only

Serves ``keelfs.meta.v1.Namespace`` (and ``Node``) on the client address; Raft on ``--listen``.
``--shard`` may be repeated (one process, several shards' members); ``--config-member`` also
hosts a config-group member. On start the master registers its client address with the config
group (``RegisterMaster``); an operator then adds the shard to the map once
(``Client.add_shard``) and formats the namespace once (``Client.format``).
"""

from __future__ import annotations

import sys

from keelfs.server.master_process import main

if __name__ == "__main__":
    sys.exit(main("master"))
