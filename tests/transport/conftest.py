"""Make the transport tests importable however pytest is launched.

The project root (for ``keelfs``) and this directory (for ``transport_helpers``) go on
``sys.path``; test modules are named ``test_transport_*`` so that they never clash with
same-named modules elsewhere under ``tests/`` in pytest's default import mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parents[1]), str(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)
