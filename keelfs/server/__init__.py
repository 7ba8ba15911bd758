"""Ready-made deployments: ``keelfs server`` (everything in one process, ``embedded``) and
``keelfs local-cluster`` (one role per process on 127.0.0.1, ``local_cluster``), with their
settings (``settings``: flags, a TOML file, ``KEELFS_*``)."""
