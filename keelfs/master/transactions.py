"""Running cross-shard transactions from the masters (the records: ``keelfs.meta.transactions``).

The coordinator is the leader of the shard that received the client's request:

1. ``TxnBegin`` in its own log (with the client's session: a retried request finds the same
   transaction), checking and locking its own part;
2. ``TxnPrepare`` to every participant's leader, concurrently;
3. ``TxnDecide``: commit if all prepared; abort if one refused; while some cannot be reached,
   prepares are re-sent until ``prepare_timeout_ms`` (log time) has passed, then abort;
4. ``TxnFinish`` to every participant, each acknowledgement recorded with ``TxnAcked``.

The client is answered once the decision is recorded and one round of step 4 was tried. Any
step may be cut short by a crash or a lost leadership: the **recovery loop** of each shard
leader picks up every open record and drives it on, coordinator records from where the log
says they are, participant records by asking the coordinator's shard (``TxnStatus``, which
answers "unknown" for a transaction it holds no record of: presumed abort). Each step is
idempotent, so a step done twice (an old leader and a new one) changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from keelfs import failpoints
from keelfs.errors import KeelError, NotLeader, OutcomeUnknown, Unavailable
from keelfs.meta.commands import Command, Tick, TxnAcked, TxnBegin, TxnDecide, TxnFinish
from keelfs.meta.principals import Caller
from keelfs.meta.transactions import Step, TxnRecord, encode_part

if TYPE_CHECKING:
    from keelfs.master.member import Member
    from keelfs.master.node import MetaNode

__all__ = ["DEFAULT_PREPARE_TIMEOUT_MS", "TxnManager"]

log = logging.getLogger("keelfs.master.txn")

DEFAULT_PREPARE_TIMEOUT_MS = 10_000
_ID_BLOCK = 64
_RETRY_S = 0.1
_RETRY_MAX_S = 5.0
"""The longest wait between two tries of a step that keeps failing (doubling from
``_RETRY_S``)."""
_RPC_DEADLINE_S = 3.0


class TxnManager:
    def __init__(
        self, node: MetaNode, *, prepare_timeout_ms: int = DEFAULT_PREPARE_TIMEOUT_MS
    ) -> None:
        self.node = node
        self.prepare_timeout_ms = prepare_timeout_ms
        self._ids: list[int] = []
        self._id_lock = asyncio.Lock()
        self._driving: dict[tuple[str, int], asyncio.Task[Any]] = {}

    # -- ids --------------------------------------------------------------------------------
    async def next_id(self) -> int:
        async with self._id_lock:
            if not self._ids:
                first = await self.node.internal.issue_txn_ids(_ID_BLOCK, deadline=5.0)
                self._ids = list(range(first + _ID_BLOCK - 1, first - 1, -1))
            return self._ids.pop()

    # -- the coordinator ----------------------------------------------------------------------
    async def run(
        self,
        member: Member,
        kind: str,
        own: Sequence[Step],
        parts: Mapping[str, Sequence[Step]],
        header: Any,
        timeout: float,
        request: Command,
        result: Any = None,
        caller: Caller | None = None,
    ) -> TxnRecord | dict[str, Any]:
        """Begin a transaction on ``member``'s shard (the leader) and drive it to a decision;
        the decided record. ``request``: the client's command this carries out; a retry of it
        (same session and seq) finds the first attempt's outcome: that transaction's record,
        or, when the first attempt was not a transaction, its reply (a ``dict``). ``caller``:
        who the client's request acts for — the begin uses the client's session, which only its
        owner may use (``keelfs.meta.sessions``).
        Raises what the begin refused with (the coordinator's own checks), or ``Unavailable``
        when no decision was reached in ``timeout`` (it goes on in the background; a retry of
        the client's request finds it)."""
        if member.group_id in parts:
            # planned under a map that changed while the planner waited (a shard removed: the
            # other side is here now); as a transaction with itself this shard would never
            # prepare (its record is the coordinator's) and never finish. Nothing is proposed,
            # so the client's retry, planned afresh, runs as a same-shard operation.
            raise Unavailable(
                "map changed",
                message=f"the shard map changed while this {kind} was planned; retry",
            )
        txn_id = await self.next_id()
        command = TxnBegin(
            txn_id,
            encode_part(own),
            json.dumps({shard: encode_part(steps) for shard, steps in parts.items()}),
            kind,
            json.dumps(result),
            request.digest_body(),
        )
        value, _, _ = await self.node.propose(member, command, header, timeout, caller)
        reply = value.unwrap()
        if "txn_id" not in reply:
            return dict(reply)
        failpoints.hit("txn.begin_recorded")
        return await self.outcome(member, int(reply["txn_id"]), timeout)

    async def outcome(self, member: Member, txn_id: int, timeout: float) -> TxnRecord:
        """Drive transaction ``txn_id`` (coordinated here) and wait for its decided record."""
        task = self._drive(member, txn_id)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            raise OutcomeUnknown(
                "transaction undecided",
                message=f"transaction {txn_id} undecided yet; retry the request "
                "(same session and seq)",
            ) from None
        except Exception as exc:  # noqa: BLE001  # whatever stopped this drive
            # The transaction began, so it goes on without this drive (the recovery loop of
            # whoever leads next) and may still commit: the client must not be told anything
            # definite (a plain UNAVAILABLE lets it send the request afresh elsewhere after a
            # map change, where it would apply a second time or answer NOT_FOUND for its own
            # rename).
            raise OutcomeUnknown(
                "transaction undecided",
                message=f"transaction {txn_id}: driving it stopped ({exc}); retry the request "
                "(same session and seq)",
            ) from exc
        record = member.sm.transaction(txn_id)
        if record is None or not record.decided:
            raise OutcomeUnknown(
                "transaction undecided",
                message=f"transaction {txn_id} is not decided yet; retry the request",
            )
        return record

    def _drive(self, member: Member, txn_id: int) -> asyncio.Task[Any]:
        """The one task that drives ``txn_id`` on this node (started if none runs)."""
        key = (member.group_id, txn_id)
        task = self._driving.get(key)
        if task is None or task.done():
            task = asyncio.create_task(self._coordinate(member, txn_id), name=f"txn-{txn_id}")
            self._driving[key] = task
            task.add_done_callback(lambda t: self._driven(key, t))
        return task

    def _driven(self, key: tuple[str, int], task: asyncio.Task[Any]) -> None:
        self._driving.pop(key, None)
        if not task.cancelled() and task.exception() is not None:  # recovery awaits none
            log.info("txn %d: driving it stopped: %s", key[1], task.exception())

    async def _coordinate(self, member: Member, txn_id: int) -> None:
        """Decide, then deliver the decision to every participant; returns early (after one
        round of deliveries) so that the client is answered; recovery finishes the rest.
        A step that fails is tried again after a wait that doubles up to ``_RETRY_MAX_S``."""
        decided_here = False
        failures = 0
        while True:
            if not member.group.is_leader:
                return
            record = member.sm.transaction(txn_id)
            if record is None or record.role != "coordinator":
                return
            if record.state == "pending":
                if await self._decide(member, record):
                    decided_here, failures = True, 0
                else:
                    failures += 1
                    await asyncio.sleep(_backoff(failures))
                continue
            if record.unacked:
                delivered = await self._deliver(member, record)
                if not delivered and not decided_here:
                    failures += 1
                    await asyncio.sleep(_backoff(failures))
                    continue
            return

    async def _decide(self, member: Member, record: TxnRecord) -> bool:
        """Prepare every participant and record the decision; whether one is recorded."""
        commit, error = await self._prepare_all(member, record)
        while commit is None:  # someone unreachable: keep trying until the timeout
            # the timeout is measured in log time, which moves only with new entries: on an
            # otherwise idle shard a Tick carries the leader's clock into the log
            with contextlib.suppress(KeelError):
                await self.node.propose(member, Tick(), None, _RPC_DEADLINE_S)
            age = member.sm.clock_ms() - record.started_ms
            if age >= self.prepare_timeout_ms:
                commit, error = (
                    False,
                    Unavailable(
                        "timeout",
                        message=f"transaction {record.txn_id}: participants did not prepare in "
                        f"{self.prepare_timeout_ms} ms",
                    ),
                )
                break
            await asyncio.sleep(_RETRY_S)
            if not member.group.is_leader:
                return False
            commit, error = await self._prepare_all(member, record)
        failpoints.hit("txn.prepare_sent")
        refused = await self._record_decision(member, record, commit, error)
        if refused is not None and commit:
            # Not recorded, so nobody was told to commit: the transaction may still abort
            # (presumed abort), which releases every lock here and on the participants and
            # tells the client why, instead of proposing a commit that cannot apply forever.
            log.warning(
                "txn %d: its commit cannot be applied on %s (%s); aborting it",
                record.txn_id, member.group_id, refused,
            )  # fmt: skip
            refused = await self._record_decision(member, record, False, refused)
        if refused is not None:
            log.warning("txn %d: no decision could be recorded: %s", record.txn_id, refused)
            return False
        failpoints.hit("txn.decision_recorded")
        return True

    async def _record_decision(
        self, member: Member, record: TxnRecord, commit: bool, error: KeelError | None
    ) -> KeelError | None:
        """Propose the decision; why the shard refused it (None: recorded)."""
        details = json.dumps(error.to_details()) if error is not None else ""
        result, _, _ = await self.node.propose(
            member, TxnDecide(record.txn_id, commit, details), None, _RPC_DEADLINE_S
        )
        return result.exception()

    async def _prepare_all(
        self, member: Member, record: TxnRecord
    ) -> tuple[bool | None, KeelError | None]:
        """(True, None): all prepared; (False, why): one refused; (None, None): some did not
        answer."""

        async def one(shard: str, part: str) -> Any:
            return await self.node.internal.txn_prepare(
                shard, record.txn_id, member.group_id, part, deadline=_RPC_DEADLINE_S
            )

        shards = sorted(record.participants)
        replies = await asyncio.gather(
            *(one(s, record.participants[s]) for s in shards), return_exceptions=True
        )
        unreachable = False
        for shard, reply in zip(shards, replies, strict=True):
            if isinstance(reply, BaseException):
                log.info("txn %d: prepare on %s failed: %s", record.txn_id, shard, reply)
                if isinstance(reply, KeelError) and not isinstance(reply, Unavailable | NotLeader):
                    return False, reply  # refused as a request (a bug, or a removed shard)
                unreachable = True
            elif reply.state != "prepared":
                return False, _error_of(reply)
        return (None, None) if unreachable else (True, None)

    async def _deliver(self, member: Member, record: TxnRecord) -> bool:
        """Send the decision to every participant that has not acknowledged it; True when all
        have."""
        commit = record.state == "committed"

        async def one(shard: str) -> bool:
            if shard == member.group_id:
                # a record planned with its own shard as a participant (before ``run`` refused
                # that): its prepare was answered by this coordinator record, never
                # "prepared", so it aborted and nothing is held there to release
                return True
            try:
                await self.node.internal.txn_finish(
                    shard, record.txn_id, commit, deadline=_RPC_DEADLINE_S
                )
            except KeelError as exc:
                # a refusal as a request (not "try later") is a bug to see: it repeats
                later = isinstance(exc, Unavailable | NotLeader)
                level = logging.INFO if later else logging.WARNING
                log.log(level, "txn %d: finish on %s failed: %s", record.txn_id, shard, exc)
                return False
            return True

        unacked = record.unacked
        done = await asyncio.gather(*(one(s) for s in unacked))
        failpoints.hit("txn.decision_sent")
        for shard, ok in zip(unacked, done, strict=True):
            if ok:
                await self.node.propose(
                    member, TxnAcked(record.txn_id, shard), None, _RPC_DEADLINE_S
                )
        return all(done)

    # -- the participant ------------------------------------------------------------------------
    async def _resolve(self, member: Member, record: TxnRecord) -> None:
        """A prepared record here: ask its coordinator, apply the answer when there is one."""
        try:
            reply = await self.node.internal.txn_status(
                record.coordinator, record.txn_id, deadline=_RPC_DEADLINE_S
            )
        except KeelError as exc:
            log.info("txn %d: status from %s failed: %s", record.txn_id, record.coordinator, exc)
            return
        if reply.state in ("committed", "aborted", "unknown"):
            commit = reply.state == "committed"
            await self.node.propose(member, TxnFinish(record.txn_id, commit), None, _RPC_DEADLINE_S)

    # -- recovery -------------------------------------------------------------------------------
    async def recovery_loop(self, interval_s: float = 0.5) -> None:
        """Forever: on every shard this node leads, drive each open record one step on."""
        while True:
            await asyncio.sleep(interval_s)
            for member in list(self.node.shards.values()):
                if not member.group.is_leader:
                    continue
                with contextlib.suppress(Exception):
                    await self._recover(member)

    async def _recover(self, member: Member) -> None:
        if not member.sm.open_transactions():
            return  # nothing to do, and no read barrier: an idle shard stays quiescent
        await self.node.read(member, False, _RPC_DEADLINE_S)  # see every applied record
        resolves: list[Any] = []
        for record in member.sm.open_transactions():
            if record.role == "coordinator":
                # runs on by itself (backing off while a participant refuses): not awaited,
                # so that one stuck transaction holds up no other
                self._drive(member, record.txn_id)
            elif record.state == "prepared":
                resolves.append(self._resolve(member, record))
        if resolves:
            await asyncio.gather(*resolves, return_exceptions=True)


def _backoff(failures: int) -> float:
    """The wait after ``failures`` failed tries in a row."""
    return float(min(_RETRY_S * 2 ** min(failures - 1, 16), _RETRY_MAX_S))


def _error_of(reply: Any) -> KeelError:
    if reply.error:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return KeelError.from_details(json.loads(reply.error))
    return Unavailable("transaction", message=f"participant answered {reply.state}")
