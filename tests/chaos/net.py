"""A network of our own for real partitions: one Linux network namespace per
node, each with a veth pair into one bridge the test makes, and iptables
rules inside each namespace to cut links.

Addresses: the bridge is ``10.213.<net>.254/24`` in the test's own namespace,
node ``i`` is ``10.213.<net>.<i>`` in its namespace; ``<net>`` is drawn at
random, and a subnet some other route already covers is skipped. The test
process talks to every node through the bridge, and no rule ever drops the
bridge's address, so clients keep reaching every node while its peers do not.

Cuts are DROP rules in a chain of our own (``HCCHAOS``) on INPUT: node ``a``
stops hearing node ``b``. A symmetric cut drops both ways. A one-way cut
drops one way only; over TCP that also stalls the other direction (its
acknowledgements are dropped), as it does on a real network.

The host's own firewall may filter bridged traffic (``br_netfilter``, as
Docker sets it up, with a FORWARD policy of DROP): one ACCEPT rule for
traffic within our bridge goes first in the host's FORWARD chain, and is
deleted with the rest.

Needs root, ``ip`` and ``iptables``: ``Network.available()`` says whether
they work here. Everything made is named ``hc<token>...`` and removed by
``close()`` (also when the test fails), by name, never by pattern.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

CHAIN = "HCCHAOS"
_SUBNET_PREFIX = "10.213"
_RUN_TIMEOUT_S = 10.0


class NetworkError(RuntimeError):
    pass


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=_RUN_TIMEOUT_S)
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass(frozen=True)
class Host:
    node_id: int
    netns: str
    address: str

    def exec_prefix(self) -> tuple[str, ...]:
        """argv prefix that runs a command inside this host's namespace."""
        return ("ip", "netns", "exec", self.netns)


H = TypeVar("H")


class Cuts(ABC, Generic[H]):
    """The shapes of a partition, built from one-way drops: every fault
    network (namespaces here, proxies in proxy.py) has them the same."""

    hosts: dict[int, H]

    @abstractmethod
    def drop(self, listener: int, silenced: int) -> None:
        """``listener`` stops hearing ``silenced`` (one way)."""

    def cut(self, a: int, b: int) -> None:
        self.drop(a, b)
        self.drop(b, a)

    def partition(self, *sides: Iterable[int]) -> None:
        """Nodes hear only the nodes of their own side."""
        groups = [set(s) for s in sides]
        for g in groups:
            for h in groups:
                if g is not h:
                    for a in g:
                        for b in h:
                            self.drop(a, b)

    def isolate(self, node: int) -> None:
        for other in self.hosts:
            if other != node:
                self.cut(node, other)


class Network(Cuts[Host]):
    """Namespaces, veths and a bridge for ``node_ids``; ``close()`` removes them."""

    def __init__(self, node_ids: Iterable[int]) -> None:
        self.token = secrets.token_hex(2)
        self.subnet = _free_subnet()
        self.bridge = f"hc{self.token}br"
        self.hosts: dict[int, Host] = {}
        self._made_netns: list[str] = []
        self._made_bridge = False
        self._forward_rule: tuple[str, ...] = ()
        self.cuts: set[tuple[int, int]] = set()  # (listener, silenced): a does not hear b
        try:
            self._make(list(node_ids))
        except BaseException:
            self.close()
            raise

    @staticmethod
    def available() -> str | None:
        """None when namespaces can be made here, else why not."""
        if os.geteuid() != 0:
            return "needs root to make network namespaces"
        for tool in ("ip", "iptables"):
            if shutil.which(tool) is None:
                return f"needs {tool}"
        probe = f"hc{secrets.token_hex(2)}probe"
        try:
            _run("ip", "netns", "add", probe)
        except (NetworkError, OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot make a network namespace: {exc}"
        try:
            _run("ip", "netns", "exec", probe, "iptables", "-L", "INPUT", "-n")
        except (NetworkError, OSError, subprocess.TimeoutExpired) as exc:
            return f"iptables does not work in a namespace: {exc}"
        finally:
            _run("ip", "netns", "del", probe, check=False)
        return None

    def _make(self, node_ids: list[int]) -> None:
        net = self.subnet
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._made_bridge = True
        _run("ip", "addr", "add", f"{net}.254/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        rule = ("FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")
        _run("iptables", "-I", *rule)
        self._forward_rule = rule
        for i in node_ids:
            ns = f"hc{self.token}n{i}"
            outer, inner = f"hc{self.token}v{i}", f"hc{self.token}p{i}"
            _run("ip", "netns", "add", ns)
            self._made_netns.append(ns)
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            _run("ip", "link", "set", inner, "netns", ns)
            _run("ip", "link", "set", outer, "master", self.bridge)
            _run("ip", "link", "set", outer, "up")
            in_ns = ("ip", "netns", "exec", ns)
            _run(*in_ns, "ip", "addr", "add", f"{net}.{i}/24", "dev", inner)
            _run(*in_ns, "ip", "link", "set", inner, "up")
            _run(*in_ns, "ip", "link", "set", "lo", "up")
            _run(*in_ns, "iptables", "-N", CHAIN)
            _run(*in_ns, "iptables", "-I", "INPUT", "-j", CHAIN)
            self.hosts[i] = Host(i, ns, f"{net}.{i}")

    # ---- cuts -------------------------------------------------------------------------

    def drop(self, listener: int, silenced: int) -> None:
        """``listener`` stops hearing ``silenced`` (one way)."""
        if (listener, silenced) in self.cuts:
            return
        host = self.hosts[listener]
        src = self.hosts[silenced].address
        _run(*host.exec_prefix(), "iptables", "-A", CHAIN, "-s", src, "-j", "DROP")
        self.cuts.add((listener, silenced))

    def drop_dialled(self, listener: int, dialer: int, port: int) -> None:
        """``listener`` stops hearing what ``dialer`` sends on connections
        ``dialer`` opened to ``port``; answers to ``listener``'s own
        requests still arrive. (Peers dial one stream per direction: this
        cuts ``dialer``'s replication stream to ``listener`` and nothing
        else.) Removed by ``heal``."""
        host = self.hosts[listener]
        src = self.hosts[dialer].address
        rule = ("-s", src, "-p", "tcp", "--dport", str(port), "-j", "DROP")
        _run(*host.exec_prefix(), "iptables", "-A", CHAIN, *rule)

    def heal(self) -> None:
        for host in self.hosts.values():
            _run(*host.exec_prefix(), "iptables", "-F", CHAIN)
        self.cuts.clear()

    # ---- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        """Remove what this network made (its processes must be gone first:
        a namespace with a live process in it outlives ``ip netns del``)."""
        for ns in self._made_netns:
            _run("ip", "netns", "del", ns, check=False)
        self._made_netns.clear()
        if self._forward_rule:
            _run("iptables", "-D", *self._forward_rule, check=False)
            self._forward_rule = ()
        if self._made_bridge:
            _run("ip", "link", "del", self.bridge, check=False)
            self._made_bridge = False


def _free_subnet() -> str:
    """A 10.213.N.0/24 that no route of this host covers yet."""
    routes = _run("ip", "-4", "route", "show").stdout.split("\n")
    taken = []
    for line in routes:
        dest = line.split(" ", 1)[0]
        if dest and dest != "default":
            try:
                taken.append(ipaddress.ip_network(dest, strict=False))
            except ValueError:
                continue
    for _ in range(64):
        candidate = ipaddress.ip_network(f"{_SUBNET_PREFIX}.{secrets.randbelow(250) + 1}.0/24")
        if not any(candidate.overlaps(t) for t in taken):
            return str(candidate.network_address).rsplit(".", 1)[0]
    raise NetworkError("no free 10.213.N.0/24 subnet for the test network")
