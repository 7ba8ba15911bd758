"""Prometheus metrics of one process, in a registry of its own (never the global one).

Two sources, one per kind of process:

- :class:`MetaMetrics` for a master or config server (a ``MetaNode``): per Raft group
  (label ``group``) the term, commit, applied and last index, whether this member leads,
  the elections this member has seen (term increases since the web server started),
  snapshots installed and proposals lost, and on a leader each member's lag; the proposal
  latency of every group and the latency of the host's synced log writes (one fsync per
  round for every group); the chunk servers and blocks this master knows of, and the block
  health of the shards it leads;
- in both, ``keelfs_rpc_server_seconds``: the gRPC calls the process served, by method and
  status code (``keelfs.rpc.observe``);
- :class:`ChunkMetrics` for a chunk server (a ``ChunkNode``): capacity, used and available
  bytes, replicas by state, the bytes of replica data written (received) and read (sent,
  including the block scanner's reads), and the heartbeat reporter's counters.

Gauges are read at scrape time from the node's own state (a custom collector: nothing to keep
in step). The latency histograms and byte counters need to see each event, so ``instrument``
wraps a few methods of the node's objects, on those instances only (``propose_entry`` of each
``RaftGroup``, the Raft engine's ``write_batch``, the block store's ``create`` and
``open_reader``): the code that calls them is unchanged, and nothing is wrapped when no web
server is asked for. Every metric carries the label ``node`` (node id or chunk server id).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keelfs.rpc.observe import RPC_SECONDS

if TYPE_CHECKING:
    from keelfs.chunk.node import ChunkNode
    from keelfs.chunk.reporting import Reporter
    from keelfs.master.node import MetaNode

__all__ = ["CONTENT_TYPE", "ChunkMetrics", "MetaMetrics", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _gauge(name: str, doc: str, labels: Iterable[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class Metrics(Collector):
    """A registry of its own holding this collector; subclasses yield their gauges."""

    role = ""

    def __init__(self, node_label: str) -> None:
        self.node_label = node_label
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.registry.register(RPC_SECONDS)  # the process's gRPC calls (keelfs.rpc.observe)

    def collect(self) -> Iterator[Metric]:
        g = _gauge("keelfs_process_role", "This process's role (always 1)", ["node", "role"])
        g.add_metric([self.node_label, self.role], 1.0)
        yield g

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetaMetrics(Metrics):
    """Metrics of a ``MetaNode`` (see the module docstring)."""

    def __init__(self, node: MetaNode) -> None:
        self.node = node
        self.role = "config" if node.config_member is not None and not node.shards else "master"
        if node.config_member is not None and node.shards:
            self.role = "config+master"
        super().__init__(str(node.node_id))
        labels = ["node", "group"]
        self.proposal_seconds = Histogram(
            "keelfs_raft_proposal_seconds",
            "Time from proposing an entry on the leader to its apply",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fsync_seconds = Histogram(
            "keelfs_raft_log_fsync_seconds",
            "Synced Raft log writes (one per round, for every group on this host)",
            ["node"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._first_term: dict[str, int] = {}
        self._instrumented: set[str] = set()
        self._engine: Any = None

    # -- instrumentation ----------------------------------------------------------------------
    def instrument(self) -> None:
        """Wrap what the histograms observe; again for groups opened since (idempotent)."""
        host = self.node.host
        if host is None:
            return
        if self._engine is not host.engine:
            self._engine = host.engine
            self._wrap_engine(host.engine)
        for gid, group in host.groups.items():
            if gid in self._instrumented:
                continue
            self._instrumented.add(gid)
            self._first_term.setdefault(gid, group.node.raft.term)
            self._wrap_group(gid, group)

    def _wrap_group(self, gid: str, group: Any) -> None:
        inner = group.propose_entry
        hist = self.proposal_seconds.labels(self.node_label, gid)

        async def propose_entry(
            data: bytes, timeout: float | None = None, *, packable: bool = False
        ) -> Any:
            t0 = time.perf_counter()
            result = await inner(data, timeout, packable=packable)
            hist.observe(time.perf_counter() - t0)
            return result

        group.propose_entry = propose_entry

    def _wrap_engine(self, engine: Any) -> None:
        inner = engine.write_batch
        hist = self.fsync_seconds.labels(self.node_label)

        def write_batch() -> Any:
            batch = inner()
            write = batch.write

            def timed_write(wb: Any, sync: bool = True) -> None:
                t0 = time.perf_counter()
                write(wb, sync)
                if sync:
                    hist.observe(time.perf_counter() - t0)

            batch.write = timed_write
            return batch

        engine.write_batch = write_batch

    # -- the gauges -----------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        yield from super().collect()
        host = self.node.host
        if host is None:
            return
        self.instrument()
        n = self.node_label
        labels = ["node", "group"]
        fams = {
            "term": _gauge("keelfs_raft_term", "Current Raft term", labels),
            "commit": _gauge("keelfs_raft_commit_index", "Highest index known committed", labels),
            "applied": _gauge("keelfs_raft_applied_index", "Highest index applied", labels),
            "last_index": _gauge("keelfs_raft_last_index", "Last index in the log", labels),
            "leader": _gauge("keelfs_raft_is_leader", "1 if this member leads its group", labels),
            "voters": _gauge("keelfs_raft_voters", "Voting members of the group", labels),
        }
        elections = CounterMetricFamily(
            "keelfs_raft_elections",
            "Term increases this member has seen since the web server started",
            labels=labels,
        )
        snapshots = CounterMetricFamily(
            "keelfs_raft_snapshots_installed", "Snapshots installed on this member", labels=labels
        )
        lost = CounterMetricFamily(
            "keelfs_raft_proposals_lost", "Proposals lost to leader changes", labels=labels
        )
        member_lag = _gauge(
            "keelfs_raft_member_lag",
            "On a group's leader: entries each member has not acknowledged yet (last index "
            "minus its match; keelfs.runtime.status.lag)",
            ["node", "group", "member"],
        )
        for gid, group in sorted(host.groups.items()):
            st = group.status()
            values = {
                "term": st.term,
                "commit": st.commit,
                "applied": st.applied,
                "last_index": st.last_index,
                "leader": 1 if st.state == "leader" else 0,
                "voters": len(st.voters),
            }
            for key, fam in fams.items():
                fam.add_metric([n, gid], float(values[key]))
            first = self._first_term.setdefault(gid, st.term)
            elections.add_metric([n, gid], float(max(0, st.term - first)))
            snapshots.add_metric([n, gid], float(st.snapshots_installed))
            lost.add_metric([n, gid], float(st.proposals_lost))
            for member, progress in sorted(st.progress.items()):
                member_lag.add_metric([n, gid, str(member)], float(progress.lag))
        yield from fams.values()
        yield elections
        yield snapshots
        yield lost
        yield member_lag
        rounds = CounterMetricFamily(
            "keelfs_raft_synced_rounds", "Ready rounds that made one synced write", labels=["node"]
        )
        rounds.add_metric([n], float(host.rounds))
        yield rounds
        yield from self._chunk_view()

    def _chunk_view(self) -> Iterator[Metric]:
        n = self.node_label
        chunks = self.node.chunks
        labels = ["node", "server"]
        capacity = _gauge(
            "keelfs_master_chunk_capacity_bytes", "Capacity a chunk server reported", labels
        )
        used = _gauge(
            "keelfs_master_chunk_used_bytes", "Bytes a chunk server reported used", labels
        )
        live = _gauge("keelfs_master_chunk_live", "1 if the chunk server heartbeats", labels)
        for sid, st in sorted(chunks.servers.items()):
            capacity.add_metric([n, sid], float(st.capacity))
            used.add_metric([n, sid], float(st.used))
            live.add_metric([n, sid], 1.0 if chunks.live(sid) else 0.0)
        yield capacity
        yield used
        yield live
        blocks = _gauge("keelfs_master_blocks", "Blocks with a reported replica", ["node"])
        blocks.add_metric([n], float(len(chunks.replicas)))
        yield blocks
        work = CounterMetricFamily(
            "keelfs_master_replication_work",
            "Repair work queued by this master (replications, deletions, orphans, recovered)",
            labels=["node", "kind"],
        )
        for kind, count in sorted(self.node.replication.stats.items()):
            work.add_metric([n, kind], float(count))
        yield work
        health = _gauge(
            "keelfs_master_block_health",
            "Per shard led here, as of its last walk: under-replicated and missing blocks",
            ["node", "shard", "kind"],
        )
        for shard, counts in sorted(self.node.replication.health.items()):
            for kind, count in sorted(counts.items()):
                health.add_metric([n, shard, kind], float(count))
        yield health


class _Counting:
    """Counts the bytes through a replica writer's ``write`` or a reader's ``read_piece``."""

    @staticmethod
    def writer(writer: Any, add: Callable[[float], None]) -> Any:
        write = writer.write

        def counted(data: bytes | memoryview, crcs: bytes, **kwargs: Any) -> int:
            out: int = write(data, crcs, **kwargs)
            add(len(data))
            return out

        writer.write = counted
        return writer

    @staticmethod
    def reader(reader: Any, add: Callable[[float], None]) -> Any:
        read_piece = reader.read_piece

        def counted() -> tuple[int, bytes] | None:
            piece: tuple[int, bytes] | None = read_piece()
            if piece is not None:
                add(len(piece[1]))
            return piece

        reader.read_piece = counted
        return reader


class ChunkMetrics(Metrics):
    """Metrics of a ``ChunkNode`` (see the module docstring)."""

    role = "chunk"

    def __init__(self, node: ChunkNode, reporter: Reporter | None = None) -> None:
        self.node = node
        self.reporter = reporter
        super().__init__(node.server_id)
        self.bytes_in = Counter(
            "keelfs_chunk_bytes_written",
            "Replica data bytes written (received from clients and pipelines)",
            ["node"],
            registry=self.registry,
        ).labels(self.node_label)
        self.bytes_out = Counter(
            "keelfs_chunk_bytes_read",
            "Replica data bytes read (sent to readers and re-replication; scanner included)",
            ["node"],
            registry=self.registry,
        ).labels(self.node_label)
        self._store: Any = None

    def instrument(self) -> None:
        store = getattr(self.node, "store", None)
        if store is None or store is self._store:
            return
        self._store = store
        create, open_reader = store.create, store.open_reader

        def counted_create(*args: Any, **kwargs: Any) -> Any:
            return _Counting.writer(create(*args, **kwargs), self.bytes_in.inc)

        def counted_open_reader(*args: Any, **kwargs: Any) -> Any:
            return _Counting.reader(open_reader(*args, **kwargs), self.bytes_out.inc)

        store.create = counted_create
        store.open_reader = counted_open_reader

    def collect(self) -> Iterator[Metric]:
        yield from super().collect()
        if getattr(self.node, "store", None) is None:
            return
        st = self.node.status()
        n = self.node_label
        for name, doc, value in (
            (
                "keelfs_chunk_capacity_bytes",
                "Capacity of the data directory's disk",
                st.capacity_bytes,
            ),
            ("keelfs_chunk_available_bytes", "Bytes free on that disk", st.available_bytes),
            ("keelfs_chunk_used_bytes", "Bytes of replica data and checksums", st.used_bytes),
        ):
            g = _gauge(name, doc, ["node"])
            g.add_metric([n], float(value))
            yield g
        replicas = _gauge("keelfs_chunk_replicas", "Replicas by state", ["node", "state"])
        replicas.add_metric([n, "finalized"], float(st.finalized))
        replicas.add_metric([n, "being_written"], float(st.being_written))
        replicas.add_metric([n, "corrupt"], float(st.corrupt))
        yield replicas
        if self.reporter is not None:
            hb = CounterMetricFamily(
                "keelfs_chunk_reporter",
                "Heartbeat reporter events (heartbeats, failures, commands, refused)",
                labels=["node", "kind"],
            )
            for kind, count in sorted(self.reporter.stats.items()):
                hb.add_metric([n, kind], float(count))
            yield hb
