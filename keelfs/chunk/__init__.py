"""The chunk server (data node): block replicas on disk, the write pipeline, verified reads.

Run one with ``keelfs chunkserver --data DIR --listen HOST:PORT``; the API is
``proto/chunk.proto`` (service ``keelfs.chunk.v1.ChunkServer``).

Modules, each with one job:

- ``store`` — :class:`~keelfs.chunk.store.BlockStore`: the replicas of one data directory
  (``layout``: files and the crash-safe commit point; ``writer``/``reader``: one replica being
  written / read; ``checksums``: CRC32C per 64 KiB chunk; ``events``: incremental reports);
- ``fencing`` — the highest epoch per shard, persisted; ``commands`` — the one entry point of
  fenced commands (delete, replicate);
- ``pipeline`` — one node's part of a WriteBlock pipeline; ``service`` — the gRPC handlers;
  ``framing`` — the data path's two messages, hand-encoded; ``wire`` — errors and conversions
  at the gRPC boundary;
- ``scanner`` — the background block scanner;
- ``node`` — :class:`~keelfs.chunk.node.ChunkNode`, everything above in one server, and the
  interface the heartbeat to masters uses (``status``, ``block_report``, ``take_events``,
  ``execute``); ``server`` — the process;
- ``protocol`` — the writer's half of the pipeline protocol and the result types;
  ``client`` — :class:`~keelfs.datapath.client.AsyncChunkClient` and
  :class:`~keelfs.datapath.client.ChunkClient`;
- ``local`` — chunk server processes on 127.0.0.1 for tests and benchmarks; ``memory`` — the
  malloc tuning a data-moving process applies.

Nothing is imported here, so that importing a client does not load the server.
"""
