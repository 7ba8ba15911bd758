"""The metadata service: the config group's and the data shards' gRPC services and processes.

- ``keelfs config-server``: a config-group member (the ShardMap, the node registry);
- ``keelfs master``: data-shard members (``--shard``, repeatable; with ``--config-member`` the
  same process also hosts a config-group member);
- ``node.MetaNode``: the process core both build (multi-raft host, client API, map cache);
- ``config_service`` / ``namespace_service``: the RPC handlers (``proto/meta.proto``);
- ``grpc_errors``: the one boundary between ``keelfs.errors`` and gRPC statuses;
- ``wire``: proto <-> record conversions.

Bringing a cluster up: start the config servers and masters (``--peers`` on first start), add
each shard to the map once (``Client.add_shard``, after its masters registered), and format
the namespace once (``Client.format`` / ``Namespace.Format``): the leader of the shard owning
"/" creates the root's self-record. Formatting is explicit rather than automatic on first
leadership so that a shard that comes to own "/" later (resharding) never invents an empty
root; it is idempotent and never erases anything. ``keelfs.server.metacluster.MetaCluster`` does
all of this for tests and local clusters.

Nothing is imported here, so that clients can use ``grpc_errors`` and ``wire`` cheaply.
"""
