"""Conventions of the KV service's wire protocol (``proto/kv.proto``) beyond the schema,
shared by ``keelfs.runtime.server`` and ``keelfs.runtime.client``."""

from __future__ import annotations

DEFAULT_GROUP = "kv"
"""The group a request with an empty ``group`` field addresses."""

LEADER_ID_KEY = "keelfs-leader-id"
"""Trailing metadata of a NOT_LEADER (FAILED_PRECONDITION) answer: the leader's node id, "0"
when unknown."""
LEADER_ADDR_KEY = "keelfs-leader-addr"
"""... the leader's client address, when the answering node knows it."""
LEADER_RAFT_ADDR_KEY = "keelfs-leader-raft-addr"
"""... the leader's Raft address, when known."""
