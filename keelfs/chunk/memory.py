"""Keeping glibc from handing megabyte buffers back to the kernel: see
``keelfs.datapath.memory`` (where the function lives, so that the data-path client can call it
too)."""

from __future__ import annotations

from keelfs.datapath.memory import tune_malloc

__all__ = ["tune_malloc"]
