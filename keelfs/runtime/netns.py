"""Network namespaces on a bridge, so that processes can be partitioned (root only).

:class:`NetnsNetwork` gives each process its own network namespace, joined by a bridge in a
hub namespace, on a private /24 that exists only there. ``ip netns exec`` runs a process in
its namespace (:meth:`NetnsNetwork.exec_prefix`; the pid is the process's own). With
``gateway`` one more veth joins the bridge to the namespace of the process that created the
network, so that clients there (the CLI, ``keelfs chaos``, a test) reach every node over TCP.

Faults: ``isolate(id)`` cuts a node off (its veth port on the bridge goes down: nobody reaches
it, not even the gateway) and ``heal(id)`` reconnects it; ``cut(a, b)`` silently drops what two
nodes send each other and ``uncut(a, b)`` restores it. :meth:`NetnsNetwork.heal_all` undoes
every fault by looking at the namespaces, not at what this object remembers (a process that
injected them may have died).

Used by ``keelfs local-cluster up --netns`` (which records the tag and subnet in its state file
so that ``down`` and ``keelfs chaos`` rebuild the same object) and by the test fixtures.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

__all__ = ["NetnsError", "NetnsNetwork", "free_subnet"]


class NetnsError(RuntimeError):
    """An ``ip`` command that sets up or changes the network failed (the message says which)."""


def free_subnet(prefix: str = "10", second: range = range(100, 200)) -> str:
    """A ``{prefix}.x.y`` /24 (x in ``second``) that no address or route of this namespace
    uses: a gateway port adds a route for its /24, and two networks must not share one."""
    used = _run(["ip", "-4", "route"]) + _run(["ip", "-4", "-o", "addr"])
    for _ in range(200):
        subnet = f"{prefix}.{secrets.choice(second)}.{secrets.randbelow(256)}"
        if f"{subnet}." not in used:
            return subnet
    raise NetnsError(f"no free {prefix}.x.y.0/24 (x in {second.start}..{second.stop - 1})")


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


class NetnsNetwork:
    """One network namespace per node on a bridge in a hub namespace (needs root).

    Addresses are ``{subnet}.{node_id}/24`` (node ids 1..252) and exist only inside these
    namespaces; nothing is configured in the creator's namespace unless ``gateway`` is set:
    then one more veth joins the bridge to it at ``{subnet}.254``, so the creator reaches every
    node over TCP (for nodes that talk to each other through the addresses clients use, as the
    metadata masters do: unix sockets would bypass any partition). Use as a context manager:
    namespaces are deleted (with their interfaces) on exit. Raises ``NetnsError`` if setup
    fails.

    Names: namespaces ``kfs{tag}hub`` and ``kfs{tag}n{id}``, the gateway link ``kfs{tag}gw``;
    a random ``tag`` keeps two networks apart, the ``subnet`` keeps their routes apart (see
    :func:`free_subnet`).

    Faults: ``isolate(id)`` takes a node's port on the bridge down and ``heal(id)`` brings it
    back; ``cut(a, b)`` silently drops every packet between two nodes, both ways, leaving both
    reachable from everyone else (each namespace routes the other's address via
    ``{subnet}.253``, a gateway whose permanent neighbour entry is a MAC nobody has: frames
    leave and are never received, and no error reaches either side's sockets, as in a real
    partition), and ``uncut(a, b)`` restores it.
    """

    GATEWAY_HOST = 254
    _NOWHERE_HOST = 253
    _NOWHERE_MAC = "02:00:00:00:00:00"

    def __init__(
        self,
        node_ids: list[int],
        subnet: str = "10.77.0",
        tag: str | None = None,
        *,
        gateway: bool = False,
    ):
        self.tag = tag or secrets.token_hex(2)
        self.subnet = subnet
        self.hub = f"kfs{self.tag}hub"
        self.node_ids = list(node_ids)
        self.socket_dir = Path(f"/tmp/kfs-{self.tag}")
        self.gateway = gateway
        self._created: list[str] = []
        self._gateway_link = ""
        self._cuts: set[tuple[int, int]] = set()
        self._blackholed: set[int] = set()

    def ip(self, node_id: int) -> str:
        if not 1 <= node_id < self._NOWHERE_HOST:
            raise ValueError(f"node id {node_id} has no address on a /24 (1..252)")
        return f"{self.subnet}.{node_id}"

    @property
    def gateway_ip(self) -> str:
        """The creator's address on the bridge (``gateway=True``)."""
        return f"{self.subnet}.{self.GATEWAY_HOST}"

    @property
    def gateway_link(self) -> str:
        """The gateway's interface in the creator's namespace (``gateway=True``)."""
        return f"kfs{self.tag}gw"

    def ns(self, node_id: int) -> str:
        return f"kfs{self.tag}n{node_id}"

    def namespaces(self) -> list[str]:
        """Every namespace of this network by name: the hub, then one per node."""
        return [self.hub, *(self.ns(i) for i in self.node_ids)]

    def _veth(self, node_id: int) -> str:
        return f"kv{self.tag}{node_id}"

    def exec_prefix(self, node_id: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns(node_id)]

    @staticmethod
    def _ip(*args: str) -> None:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip()}")

    def create(self) -> NetnsNetwork:
        try:
            self.socket_dir.mkdir(mode=0o700, exist_ok=False)
            self._ip("netns", "add", self.hub)
            self._created.append(self.hub)
            self._ip("-n", self.hub, "link", "set", "lo", "up")
            self._ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            self._ip("-n", self.hub, "link", "set", "br0", "up")
            if self.gateway:
                self._add_gateway()
            for i in list(self.node_ids):
                self.add_node(i)
        except BaseException:
            self.destroy()
            raise
        return self

    def _add_gateway(self) -> None:
        link, hub_end = self.gateway_link, f"kg{self.tag}"
        self._ip("link", "add", link, "type", "veth", "peer", "name", hub_end, "netns", self.hub)
        self._gateway_link = link
        self._ip("-n", self.hub, "link", "set", hub_end, "master", "br0")
        self._ip("-n", self.hub, "link", "set", hub_end, "up")
        self._ip("addr", "add", f"{self.gateway_ip}/24", "dev", link)
        self._ip("link", "set", link, "up")

    def add_node(self, node_id: int) -> None:
        """Create ``node_id``'s namespace on the bridge (also after ``create``)."""
        ns, hub_end = self.ns(node_id), self._veth(node_id)
        address = self.ip(node_id)
        self._ip("netns", "add", ns)
        self._created.append(ns)
        if node_id not in self.node_ids:
            self.node_ids.append(node_id)
        self._ip("-n", ns, "link", "set", "lo", "up")
        # create the pair inside the hub namespace, then move the node end into its own
        self._ip("-n", self.hub, "link", "add", hub_end, "type", "veth", "peer", "name", "eth0")
        self._ip("-n", self.hub, "link", "set", "eth0", "netns", ns)
        self._ip("-n", self.hub, "link", "set", hub_end, "master", "br0")
        self._ip("-n", self.hub, "link", "set", hub_end, "up")
        self._ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        self._ip("-n", ns, "link", "set", "eth0", "up")

    # -- faults ------------------------------------------------------------------------------
    def isolate(self, node_id: int) -> None:
        self._ip("-n", self.hub, "link", "set", self._veth(node_id), "down")

    def heal(self, node_id: int) -> None:
        self._ip("-n", self.hub, "link", "set", self._veth(node_id), "up")

    def _drop_towards(self, node_id: int, peer: int) -> None:
        ns, nowhere = self.ns(node_id), self._nowhere
        if node_id not in self._blackholed:
            self._ip("-n", ns, "neigh", "replace", nowhere, "lladdr", self._NOWHERE_MAC,
                     "dev", "eth0", "nud", "permanent")  # fmt: skip
            self._blackholed.add(node_id)
        self._ip("-n", ns, "route", "replace", f"{self.ip(peer)}/32", "via", nowhere)

    @property
    def _nowhere(self) -> str:
        return f"{self.subnet}.{self._NOWHERE_HOST}"

    def cut(self, a: int, b: int) -> None:
        """Drop every packet between nodes ``a`` and ``b``, both ways (idempotent)."""
        if a == b:
            raise ValueError("a node cannot be cut from itself")
        self._drop_towards(a, b)
        self._cuts.add((a, b))
        self._drop_towards(b, a)
        self._cuts.add((b, a))

    def uncut(self, a: int, b: int) -> None:
        """Undo ``cut(a, b)`` (idempotent)."""
        for x, y in ((a, b), (b, a)):
            if (x, y) in self._cuts:
                self._ip("-n", self.ns(x), "route", "del", f"{self.ip(y)}/32")
                self._cuts.discard((x, y))

    def cuts(self) -> set[frozenset[int]]:
        """The pairs currently cut apart (by this object)."""
        return {frozenset(p) for p in self._cuts}

    def heal_all(self) -> None:
        """Undo every fault of every node, as the namespaces show them (also those injected by
        a process that died since): each port on the bridge up, each route to nowhere gone.
        Tries every node; raises the first failure afterwards."""
        first: NetnsError | None = None
        for node_id in self.node_ids:
            try:
                self.heal(node_id)
                self._ip("-n", self.ns(node_id), "route", "flush", "via", self._nowhere)
            except NetnsError as exc:
                first = first or exc
        self._cuts.clear()
        if first is not None:
            raise first

    # -- teardown ----------------------------------------------------------------------------
    def destroy(self) -> None:
        """Delete what this object created (never a namespace that existed before)."""
        if self._gateway_link:  # at once: a namespace's interfaces vanish asynchronously
            _run(["ip", "link", "del", self._gateway_link])
            self._gateway_link = ""
        for name in reversed(self._created):
            _run(["ip", "netns", "del", name])
        self._created = []
        self._forget()

    def remove_all(self) -> None:
        """Delete every namespace and link this network's names denote, whoever created them
        (a network recorded by a process that may have crashed half-way): idempotent."""
        if self.gateway:
            _run(["ip", "link", "del", self.gateway_link])
        for name in reversed(self.namespaces()):
            _run(["ip", "netns", "del", name])
        self._created, self._gateway_link = [], ""
        self._forget()

    def leftovers(self) -> list[str]:
        """This network's namespaces and gateway link that still exist (none after
        :meth:`remove_all`)."""
        existing = set(_run(["ip", "netns", "list"]).split())
        left = [name for name in self.namespaces() if name in existing]
        if self.gateway and _run(["ip", "-o", "link", "show", "dev", self.gateway_link]):
            left.append(self.gateway_link)
        return left

    def _forget(self) -> None:
        self._cuts.clear()
        self._blackholed.clear()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> NetnsNetwork:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    @staticmethod
    def available(*, gateway: bool = False) -> tuple[bool, str]:
        """Whether network namespaces (with ``gateway``: and a port into the caller's own
        namespace) can be used here, and why not."""
        if os.geteuid() != 0:
            return False, "network namespaces need root"
        if shutil.which("ip") is None:
            return False, "iproute2 (ip) is not installed"
        probe = NetnsNetwork([], free_subnet(), tag=secrets.token_hex(2), gateway=gateway)
        try:
            probe.create()
        except Exception as exc:
            return False, f"cannot create network namespaces: {exc}"
        finally:
            probe.destroy()
        return True, ""
