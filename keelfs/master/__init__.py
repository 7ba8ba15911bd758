"""The metadata service: the config group's and the data shards' gRPC services and processes.

- ``keelfs config-server``: a config-group member (the ShardMap, the node registry);
- ``keelfs master``: data-shard members (``--shard``, repeatable; with ``--config-member`` the
  same process also hosts a config-group member);
- ``node.MetaNode``: the process core both build (multi-raft host, client API, map cache);
- ``config_service`` / ``namespace_service`` / ``block_service`` / ``node_service``: the RPC
  handlers (``proto/meta.proto``); ``namespace_requests`` decodes and checks the namespace
  requests, ``cross_shard`` plans the operations that span shards as transactions, which
  ``transactions`` coordinates.

Bringing a cluster up: start the config servers and masters (``--peers`` on first start), add
each shard to the map once (``Client.add_shard``, after its masters registered), and format
the namespace once (``Client.format`` / ``Namespace.Format``): the leader of the shard owning
"/" creates the root's self-record. Formatting is explicit rather than automatic on first
leadership so that a shard that comes to own "/" later (resharding) never invents an empty
root; it is idempotent and never erases anything. ``keelfs.server.metacluster.MetaCluster`` does
all of this for tests and local clusters.

Nothing is imported here.
"""
