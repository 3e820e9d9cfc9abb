"""The fault suite's network where namespaces cannot be made: TCP proxies
between the peers, on 127.0.0.1, that the nemesis can cut.

Every node listens on 127.0.0.1 on free ports of its own. Node ``d`` does not
reach its peer ``t`` directly: its ``--peers`` (``peers_arg(d)``) names, for
each peer ``t``, the port of a proxy for the directed link ``d -> t``, which
forwards to ``t``'s real peer port. Every connection ``d`` opens to ``t`` (the
Raft stream it dials, forwarded writes, session pings, snapshot streams)
crosses that proxy; clients reach each node directly.

What a cut means. ``drop(listener, silenced)`` stops every byte *from*
``silenced`` *to* ``listener``: on the link ``silenced -> listener`` the bytes
the dialer sends (its frames and requests), and on the link ``listener ->
silenced`` the bytes the dialer receives (answers, pongs, the upgrade's 101).
Bytes the other way keep flowing on connections that already exist, but no
new connection forms between the two in either direction (a TCP handshake
needs both ways): a dial is accepted and held until the link heals. As on a
real network, the dialers' keepalives then give up their sockets within
seconds, so a one-way cut soon silences the established streams too.
``drop_dialled(listener, dialer, port)`` is narrower: only the bytes
``dialer`` sends on its own dials to ``listener`` (its replication stream,
its RPCs) stop; the answers on them and ``listener``'s own dials pass.

Held, not lost (``cut_mode="hold"``, the default). A real partition sends no
RST and TCP retransmits what it lost: the proxy stops reading the cut
direction (at most one read of bytes waits in the proxy, the rest in the
kernel's buffers, where the sender's writes then block) and delivers it all,
in order, at the heal; an end of stream waits with the bytes. Discarding
bytes from the middle of a stream instead would break its framing, which no
network does. ``cut_mode="reset"`` is the firewall that rejects: a cut
aborts every connection of the two links (both directions of a connection
go, as with a TCP RST) and aborts new ones at once until the heal.

Everything runs on one asyncio loop in a thread of its own; the public
methods are called from the test's threads and return once the loop has
applied them. ``close()`` aborts every socket, stops the loop and joins it.
Bounds: ``connections_per_link_max`` open connections per link (more are
aborted on accept); a connected direction holds at most one read, a dial
not connected yet at most ``READ_BYTES_MAX``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from tests.chaos.net import Cuts
from tests.integration.cluster import node_port

LOOPBACK = "127.0.0.1"
CALL_TIMEOUT_S = 10.0  # a call to the proxy's loop; it never waits on a peer
CONNECT_TIMEOUT_S = 2.0  # to a node's real port on this host: refused at once if it is down
CONNECTIONS_PER_LINK_MAX = 64
READ_BYTES_MAX = 64 * 1024  # held from a dial not yet connected
_SHUTDOWN_TURNS = 8

CutMode = Literal["hold", "reset"]
T = TypeVar("T")


@dataclass(frozen=True)
class ProxyHost:
    """A node of the proxy network: where it really listens."""

    node_id: int
    client_port: int
    peer_port: int
    address: str = LOOPBACK

    def exec_prefix(self) -> tuple[str, ...]:
        """Nodes run in the test's own namespace: nothing to prefix."""
        return ()


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: it reports, the connection decides."""

    def __init__(self, conn: _Conn, upstream: bool) -> None:
        self.conn = conn
        self.upstream = upstream  # the socket to the target node, not the dialer's
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.update()

    def data_received(self, data: bytes) -> None:
        self.conn.pipe_from(self).held.append(data)
        self.conn.update()

    def eof_received(self) -> bool:
        self.conn.pipe_from(self).eof_held = True
        self.conn.update()
        return True  # keep the socket open: the other direction may still carry bytes

    def connection_lost(self, exc: Exception | None) -> None:
        # A reset (or our own close): its direction ends as it would at a
        # FIN, after the held bytes and only when the cut heals, and then the
        # whole connection goes, as an RST takes both directions.
        self.transport = None
        pipe = self.conn.pipe_from(self)
        pipe.eof_held = True
        pipe.source_lost = True
        self.conn.update()

    def pause_writing(self) -> None:
        self.conn.pipe_into(self).sink_full = True
        self.conn.update()

    def resume_writing(self) -> None:
        self.conn.pipe_into(self).sink_full = False
        self.conn.update()


class _Reject(asyncio.Protocol):
    """A dial refused with an RST: aborted as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.abort()


@dataclass(eq=False)
class _Pipe:
    """One direction of a connection: bytes from ``source`` to ``sink`` pass
    while ``is_open()`` says so; otherwise they wait here and in the kernel."""

    source: _Side
    sink: _Side | None  # None until the connection to the target is made
    is_open: Callable[[], bool]
    count: Callable[[int], None]
    held: list[bytes] = field(default_factory=list)
    eof_held: bool = False
    eof_sent: bool = False
    source_lost: bool = False
    sink_full: bool = False

    def held_bytes(self) -> int:
        return sum(len(b) for b in self.held)

    def flow(self) -> None:
        """Deliver what may pass now, then read on only if more could."""
        sink = self.sink.transport if self.sink is not None else None
        if sink is not None and self.is_open() and not sink.is_closing():
            for chunk in self.held:
                sink.write(chunk)
                self.count(len(chunk))
            self.held.clear()
            if self.eof_held and not self.eof_sent:
                self.eof_sent = True
                if sink.can_write_eof():
                    sink.write_eof()
        source = self.source.transport
        if source is None or source.is_closing():
            return
        if self.sink is None:
            # Not connected yet: keep reading (a little) so that a dialer
            # giving up is seen, and its dial never reaches the target.
            reading = not self.eof_held and self.held_bytes() < READ_BYTES_MAX
        else:
            reading = not self.held and not self.eof_held and not self.sink_full
        if reading:
            source.resume_reading()
        else:
            source.pause_reading()


class _Conn:
    """A dialer's connection through the proxy of link ``dialer -> target``."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        net = link.net
        self.client = _Side(self, upstream=False)
        self.server = _Side(self, upstream=True)
        d, t = link.dialer, link.target
        self.up = _Pipe(self.client, None, lambda: net.hears_dialled(t, d), link.count_up)
        self.down = _Pipe(self.server, self.client, lambda: net.hears(d, t), link.count_down)
        self.connecting = False
        self.closed = False

    def pipe_from(self, side: _Side) -> _Pipe:
        return self.down if side.upstream else self.up

    def pipe_into(self, side: _Side) -> _Pipe:
        return self.up if side.upstream else self.down

    def update(self) -> None:
        """The one place that decides what this connection does next."""
        if self.closed:
            return
        if self.up.sink is None:
            if self.up.eof_held:
                self.close(abort=True)  # the dialer gave up before the connection formed
                return
            if not self.connecting and self.link.both_ways():
                self.connecting = True
                self.link.net.spawn(self._connect())
            self.up.flow()
            return
        self.up.flow()
        self.down.flow()
        if any(p.eof_sent and p.source_lost for p in (self.up, self.down)):
            self.close(abort=True)  # a reset, delivered: the other end is reset too
        elif self.up.eof_sent and self.down.eof_sent:
            self.close(abort=False)  # both ends done writing: flush and close

    async def _connect(self) -> None:
        link = self.link
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await link.net.loop.create_connection(
                    lambda: self.server, LOOPBACK, link.net.hosts[link.target].peer_port
                )
        except (OSError, TimeoutError):
            self.close(abort=True)  # the node is down: its port refuses, as on any network
            return
        if self.closed:
            self.close(abort=True)
            return
        self.up.sink = self.server
        self.update()

    def close(self, abort: bool) -> None:
        self.closed = True
        for side in (self.client, self.server):
            if side.transport is not None:
                if abort:
                    side.transport.abort()
                else:
                    side.transport.close()
        self.link.conns.discard(self)


class _Link:
    """The proxy for ``dialer -> target``: a listening socket of its own."""

    def __init__(self, net: ProxyNetwork, dialer: int, target: int) -> None:
        self.net = net
        self.dialer = dialer
        self.target = target
        self.sock = socket.create_server((LOOPBACK, 0))
        self.port: int = self.sock.getsockname()[1]
        self.server: asyncio.Server | None = None
        self.conns: set[_Conn] = set()
        self.accepted = 0
        self.bytes_up = 0  # dialer -> target, delivered
        self.bytes_down = 0  # target -> dialer, delivered

    def count_up(self, n: int) -> None:
        self.bytes_up += n

    def count_down(self, n: int) -> None:
        self.bytes_down += n

    def both_ways(self) -> bool:
        """Whether a handshake could cross: a connection needs both ways."""
        net = self.net
        return net.hears_dialled(self.target, self.dialer) and net.hears(self.dialer, self.target)

    def accept(self) -> asyncio.Protocol:
        self.accepted += 1
        full = len(self.conns) >= self.net.connections_per_link_max
        if full or (self.net.cut_mode == "reset" and not self.both_ways()):
            return _Reject()
        conn = _Conn(self)
        self.conns.add(conn)
        return conn.client


class ProxyNetwork(Cuts[ProxyHost]):
    """Proxies for every ordered pair of ``node_ids``; ``close()`` removes them.

    The surface the fault suite uses is ``net.py``'s ``Network``'s: ``hosts``,
    ``cuts``, ``drop``, ``drop_dialled``, ``cut``, ``partition``, ``isolate``,
    ``heal``, ``close``; and ``peers_arg(node)``, the ``--peers`` node must
    be given.
    """

    def __init__(
        self,
        node_ids: Iterable[int],
        cut_mode: CutMode = "hold",
        connections_per_link_max: int = CONNECTIONS_PER_LINK_MAX,
    ) -> None:
        ids = sorted(set(node_ids))
        assert cut_mode in ("hold", "reset"), cut_mode
        self.cut_mode: CutMode = cut_mode
        self.connections_per_link_max = connections_per_link_max
        self.cuts: set[tuple[int, int]] = set()  # (listener, silenced): a does not hear b
        # (listener, dialer): listener does not hear what dialer sends on the
        # connections dialer opens to it (drop_dialled); answers still pass.
        self.dialled_cuts: set[tuple[int, int]] = set()
        self.links: dict[tuple[int, int], _Link] = {}
        self.loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="chaos-proxy", daemon=True
        )
        self._closed = False
        try:
            # The proxies' ports first, held: the nodes' ports, drawn next,
            # cannot be one of them.
            for d in ids:
                for t in ids:
                    if d != t:
                        self.links[(d, t)] = _Link(self, d, t)
            self.hosts = {i: ProxyHost(i, node_port(), node_port()) for i in ids}
            self._thread.start()
            self._call(self._serve)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def available() -> str | None:
        """Always: it needs nothing but 127.0.0.1."""
        return None

    def peers_arg(self, node: int) -> str:
        """``--peers`` for ``node``: its own real peer address, and the proxy
        of each of its links for every other member."""
        parts = []
        for i, host in sorted(self.hosts.items()):
            port = host.peer_port if i == node else self.links[(node, i)].port
            parts.append(f"{i}={LOOPBACK}:{port}")
        return ",".join(parts)

    # ---- cuts -------------------------------------------------------------------------

    def hears(self, listener: int, speaker: int) -> bool:
        return (listener, speaker) not in self.cuts

    def hears_dialled(self, listener: int, dialer: int) -> bool:
        """Whether ``listener`` hears what ``dialer`` sends on its own dials."""
        return self.hears(listener, dialer) and (listener, dialer) not in self.dialled_cuts

    def drop(self, listener: int, silenced: int) -> None:
        """``listener`` stops hearing ``silenced`` (one way; see the module's doc)."""
        assert listener in self.hosts and silenced in self.hosts and listener != silenced
        self._call(self._drop, listener, silenced)

    def drop_dialled(self, listener: int, dialer: int, port: int) -> None:
        """``listener`` stops hearing what ``dialer`` sends on the connections
        ``dialer`` opened to ``port`` (``listener``'s peer port, the only one
        peers dial); answers to them, and ``listener``'s own dials, pass."""
        if port != self.hosts[listener].peer_port:
            raise ValueError(f"node {listener} is dialed on its peer port only, not {port}")
        self._call(self._drop_dialled, listener, dialer)

    def heal(self) -> None:
        self._call(self._heal)

    # ---- observation ------------------------------------------------------------------

    def link_stats(self, dialer: int, target: int) -> dict[str, int]:
        """Connections and delivered bytes of one link (read on the loop)."""

        async def read() -> dict[str, int]:
            link = self.links[(dialer, target)]
            return {
                "open": len(link.conns),
                "accepted": link.accepted,
                "bytes_up": link.bytes_up,
                "bytes_down": link.bytes_down,
                "held_bytes": sum(
                    len(b) for c in link.conns for p in (c.up, c.down) for b in p.held
                ),
            }

        return self._run(read())

    # ---- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        """Abort every connection, close every listener, stop the loop."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._call(self._shutdown)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(CALL_TIMEOUT_S)
        for link in self.links.values():
            link.sock.close()  # the server closed it already if it started
        if not self._thread.is_alive():
            self.loop.close()

    # ---- on the loop ------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self) -> None:
        for link in self.links.values():
            link.server = await self.loop.create_server(link.accept, sock=link.sock)

    async def _drop(self, listener: int, silenced: int) -> None:
        self.cuts.add((listener, silenced))
        affected = [self.links[(silenced, listener)], self.links[(listener, silenced)]]
        for link in affected:
            for conn in list(link.conns):
                if self.cut_mode == "reset":
                    conn.close(abort=True)
                else:
                    conn.update()  # stops reading the direction just cut

    async def _drop_dialled(self, listener: int, dialer: int) -> None:
        self.dialled_cuts.add((listener, dialer))
        for conn in list(self.links[(dialer, listener)].conns):
            if self.cut_mode == "reset":
                conn.close(abort=True)
            else:
                conn.update()

    async def _heal(self) -> None:
        self.cuts.clear()
        self.dialled_cuts.clear()
        for link in self.links.values():
            for conn in list(link.conns):
                conn.update()

    async def _shutdown(self) -> None:
        for link in self.links.values():
            if link.server is not None:
                link.server.close()
            for conn in list(link.conns):
                conn.close(abort=True)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CALL_TIMEOUT_S)
        # An aborted transport closes its socket in a callback of the next
        # loop turns: let them run before the loop stops.
        for _ in range(_SHUTDOWN_TURNS):
            await asyncio.sleep(0)

    def _call(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: int) -> None:
        self._run(fn(*args))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert threading.current_thread() is not self._thread, "call from the test, not the loop"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT_S)
