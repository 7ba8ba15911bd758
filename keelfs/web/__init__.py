"""The HTTP side of keelfs processes: health, Prometheus metrics, Raft state, the dashboard.

``keelfs.web.listen`` holds the ``--http-listen`` flag (cheap to import: the processes parse
it whether or not they serve HTTP); ``keelfs.web.app`` the server and its endpoints (imported
only when asked for, since aiohttp and prometheus-client take time to load);
``keelfs.web.metrics`` the metrics; ``keelfs.web.dashboard`` the cluster view that the
dashboard page (``static/``) polls.
"""
