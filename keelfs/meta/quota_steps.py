"""A data shard's quota commands and reads (the design: ``keelfs.meta.quotas``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from keelfs.errors import InvalidArgument
from keelfs.meta import paths, quotas
from keelfs.meta.commands import QuotaReport, SetQuota
from keelfs.meta.kvstore import Txn, prefix_end
from keelfs.meta.machine import Context
from keelfs.meta.records import decode_foreign
from keelfs.meta.shard_records import ShardRecords, _entry_key, _subtree_entry_ranges

__all__ = ["QuotaSteps"]


class QuotaSteps(ShardRecords):
    """``set_quota``, ``quota_report`` and the quota reads (a transaction's part is checked
    against the quotas in ``TransactionSteps._check_steps``)."""

    def quota(self, path: str) -> dict[str, Any]:
        """``path``'s quota as this shard sees it: the limits (None: no quota), what this
        shard holds under it, and the other shards' last reports."""
        path = paths.normalize(path)
        limits = self.quota_limits.get(path)
        if limits is None:
            return {"path": path, "names": None, "space": None, "here": [0, 0], "reports": {}}
        here = quotas.local_usage(self._store, path)
        reports = quotas.reported_usage(self._store, path)
        return {
            "path": path,
            "names": limits.names,
            "space": limits.space,
            "here": [here.names, here.space],
            "reports": {shard: [u.names, u.space] for shard, u in reports.items()},
        }

    def quota_usage_report(self) -> dict[str, list[int]]:
        """What this shard holds under each quota directory (its report to the others)."""
        out: dict[str, list[int]] = {}
        for root in self.quota_limits:
            u = quotas.local_usage(self._store, root)
            out[root] = [u.names, u.space]
        return out

    def quota_limits_report(self) -> dict[str, list[int | None]]:
        """Every quota this shard knows, cleared ones included (``[names, space, version]``):
        sent along with the reports, so that a shard that missed a set (added later) learns
        it, and a newer set or clear wins everywhere."""
        out: dict[str, list[int | None]] = {}
        for key, raw in self._store.scan(quotas.LIMIT, prefix_end(quotas.LIMIT)):
            found = quotas.Limits.decode(raw)
            out[key[len(quotas.LIMIT) :].decode()] = [found.names, found.space, found.version]
        return out

    def check_incoming(self, src: str, dst: str, records: Iterable[str]) -> None:
        """``QuotaExceeded`` if moving ``records`` (encoded entries: a file, or a whole
        subtree) from ``src`` to ``dst`` passes a quota that holds ``dst`` and not ``src``, as
        this shard sees the usage (its own exact, the others' reports): a cross-shard
        rename's check as a whole, before its parts are each checked where they land."""
        roots = self.quota_limits
        above_src = set(quotas.roots_above(src, roots))
        gained = [r for r in quotas.roots_above(dst, roots) if r not in above_src]
        if not gained:
            return
        total = quotas.Usage()
        for record in records:
            total = total + quotas.inode_usage(decode_foreign(record.encode()))
        quotas.check(self._store, dict.fromkeys(gained, total), roots)

    def quota_roots_at_or_under(self, path: str) -> list[str]:
        """The quota directories that are ``path`` or below it."""
        path = paths.normalize(path)
        return [r for r in self.quota_limits if r == path or paths.is_ancestor(path, r)]

    def _subtree_records(self, txn: Txn, root: str) -> list[tuple[bytes, bytes]]:
        """This shard's entries under ``root`` and ``root``'s own entry if here."""
        out: list[tuple[bytes, bytes]] = []
        own = txn.get(_entry_key(root))
        if own is not None:
            out.append((_entry_key(root), own))
        for start, end in _subtree_entry_ranges(root):
            out.extend(txn.scan(start, end))
        return out

    def _apply_limits(self, txn: Txn, root: str, limits: quotas.Limits) -> bool:
        changed = quotas.set_limits(txn, root, limits, self._subtree_records(txn, root))
        if changed:
            self._quotas_changed = True
        return changed

    def _op_set_quota(self, txn: Txn, cmd: SetQuota, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        applied = self._apply_limits(txn, path, quotas.Limits(cmd.names, cmd.space, cmd.version))
        return {"applied": applied}

    def _op_quota_report(self, txn: Txn, cmd: QuotaReport, ctx: Context) -> Any:
        if cmd.shard == self.shard_id:
            raise InvalidArgument("a shard does not report to itself", "shard")
        for root, (names, space, version) in sorted(json.loads(cmd.limits).items()):
            root = paths.normalize(root)
            known = self.quota_limits.get(root)
            if known is None or known.version < version:
                self._apply_limits(txn, root, quotas.Limits(names, space, version))
        usage = {
            paths.normalize(root): quotas.Usage(names, space)
            for root, (names, space) in json.loads(cmd.usage).items()
        }
        roots = quotas.limits(txn)
        return {"kept": quotas.record_report(txn, cmd.shard, usage, roots)}
