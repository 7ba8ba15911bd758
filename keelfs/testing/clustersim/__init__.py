"""A whole-cluster simulator: the real metadata masters in one process, on virtual time.

FoundationDB's simulation is the model. One seed fixes everything (see ``world``); a failing
seed replays exactly. ``python -m keelfs.testing.clustersim --seeds N`` runs a sweep.

Modules: ``loop`` (the deterministic event loop and virtual clock), ``rpc`` (in-process gRPC),
``cluster`` (the ``MetaNode`` s and their seams), ``chunks`` (simulated chunk servers and the
data invariants), ``workload``, ``nemesis``, ``checks``, ``world`` (one run).
"""
