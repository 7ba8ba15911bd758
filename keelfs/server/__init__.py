"""The processes of keelfs: ``keelfs server`` (everything in one process, ``embedded``), the
role commands ``keelfs master``, ``config-server`` and ``chunkserver`` (``roles``: what they
run is ``master_process`` and ``chunk_process``), every command's settings (``settings``:
flags, a TOML file, ``KEELFS_*``), the one cluster layout (``layout``) from which
``keelfs local-cluster`` (``local_cluster``) and the launchers of real-process clusters
(``metacluster``, ``chunkservers``) start processes, and the KV server's launcher
(``kvcluster``)."""
