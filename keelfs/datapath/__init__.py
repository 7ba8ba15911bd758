"""The block data path, as both of its ends speak it: chunk servers (which also forward along
a write pipeline and copy replicas between themselves) and clients.

- ``checksums``: CRC32C per 64 KiB chunk; ``framing``: packets and read replies on the wire;
- ``protocol``: a write pipeline's packets, acknowledgements and their outcome;
- ``client``: the calls a block's reader, writer or replicator makes to a chunk server;
- ``replica``: what a replica is (id, generation stamp, length, owning shard) and the outcome
  of deleting one; ``wire``: their messages and the chunk servers' error details.

The chunk server itself (store, fencing, scanner, reporting) is ``keelfs.chunk``; it and
``keelfs.client`` both build on this package, which knows neither.
"""
