"""The Raft consensus core, pure: no I/O, no clock, no threads (etcd-io/raft's shape).

``rawnode.RawNode`` takes messages, ticks and proposals and hands back a ``Ready`` (entries to
persist, messages to send, entries to apply); the caller (``keelfs.runtime``) does the I/O.
``sim`` runs many nodes on a seeded, simulated network so that any failing seed replays.
"""
