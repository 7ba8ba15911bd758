"""TLS and identities: what any layer that listens or dials needs, so it stands alone (it
imports nothing of keelfs, like ``keelfs.errors``), and the Raft transport can use it too.

- ``identity``: who a certificate names (``keelfs://master/3``, ``keelfs://user/alice``) and
  the identity values (a peer, a client, nobody);
- ``certs``: the peer and client CAs and the certificates they issue (``keelfs certs``);
- ``credentials``: ``TlsSettings``, the gRPC credentials, ports and channels made from it (or
  insecure ones from ``None``), and the ``Authenticator`` that names a call's peer.

The access classes of the RPC methods, which use these identities, are ``keelfs.rpc.access``.
"""
