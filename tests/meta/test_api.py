"""The public surface of keelfs.meta, and the command names, which are a wire format."""

from __future__ import annotations

import keelfs.meta
from keelfs.meta.commands import CONFIG_COMMANDS, SESSION_COMMANDS, SHARD_COMMANDS


def test_public_api() -> None:
    assert sorted(keelfs.meta.__all__) == [
        "BlockInfo",
        "ConfigStateMachine",
        "ContentSummary",
        "Envelope",
        "FileInfo",
        "HashRing",
        "Listing",
        "Result",
        "ShardMap",
        "ShardStateMachine",
    ]
    for name in keelfs.meta.__all__:
        assert getattr(keelfs.meta, name) is not None


def test_command_names_are_stable() -> None:
    """Renaming an op breaks every log that holds it: these strings are forever."""
    assert sorted(SESSION_COMMANDS) == ["close_session", "keep_alive", "register_session", "tick"]
    assert sorted(set(SHARD_COMMANDS) - set(SESSION_COMMANDS)) == [
        "add_block",
        "append",
        "complete",
        "complete_inline",
        "concat",
        "create",
        "create_inline",
        "delete",
        "dequeue_block_deletes",
        "mkdir",
        "mkdir_self",
        "modify_acl_entries",
        "move_drop",
        "move_freeze",
        "move_ingest",
        "move_settle",
        "move_tree_abort",
        "move_tree_drop",
        "move_tree_fence",
        "move_tree_stage",
        "quota_report",
        "recover_lease",
        "remove_acl",
        "remove_acl_entries",
        "remove_default_acl",
        "rename",
        "renew_lease",
        "set_acl",
        "set_owner",
        "set_permission",
        "set_quota",
        "set_replication",
        "set_times",
        "set_traverse_guard",
        "snapshot_allow",
        "snapshot_drop",
        "snapshot_rename",
        "snapshot_take",
        "truncate",
        "txn_acked",
        "txn_begin",
        "txn_decide",
        "txn_finish",
        "txn_prepare",
        "update_block",
    ]
    assert sorted(set(CONFIG_COMMANDS) - set(SESSION_COMMANDS)) == [
        "add_block_key",
        "add_shard",
        "begin_move",
        "finish_move",
        "issue_tx_ids",
        "register_chunk_server",
        "register_master",
        "remove_shard",
        "seal_ring",
        "set_server_admin_state",
        "set_shard_members",
        "switch_move",
        "unregister_chunk_server",
    ]
    for ops in (SHARD_COMMANDS, CONFIG_COMMANDS):
        for op, cls in ops.items():
            assert cls.op == op
