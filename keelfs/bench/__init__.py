"""Benchmarks behind ``keelfs bench ...``: each prints a table and, with ``--json``, one JSON
object as its last line. Benchmarks measure; tests never depend on their figures."""
