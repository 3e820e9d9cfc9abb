"""A session that keeps itself alive, moves between nodes, and says how it is.

The background task heartbeats every ttl/3 on the session's keepalive
WebSocket, each heartbeat followed by a ping: the server handles a socket's
frames in order, so its pong says the heartbeat before it was taken (a node
that refuses one closes the socket instead). When the socket breaks, or the
node closes it to say it cannot keep the session alive (1013, 1001), the
session moves to the next endpoint, heartbeating over HTTP until a socket
opens again; an endpoint that refuses the upgrade (a proxy, say) is used
over HTTP alone.

States, as Curator's connection states:

- ``CONNECTED``: a heartbeat was acknowledged less than a ttl/3 ago.
- ``SUSPENDED``: the last heartbeat went unacknowledged. The session may
  still live, but a holder of a lock or leadership cannot know it still
  holds it: recipes treat this as losing their grant.
- ``LOST``: the server said the session is gone (closed or expired), or no
  heartbeat was acknowledged for a whole ttl, after which the leader has
  expired it. Final: open a new session.
- ``CLOSED``: ``close()`` was called. Final.

Listeners are called on every change, in the event loop, with the new
state; ``wait_for(state)`` waits for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp
from aiohttp import WSMsgType

from httpcoord.errors import CoordError, SessionExpired

if TYPE_CHECKING:
    from httpcoord.client.aio import Client

log = logging.getLogger(__name__)

WS_SESSION_EXPIRED = 4404  # the server's close code for a session that is gone


class SessionState(enum.Enum):
    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"
    CLOSED = "closed"


Listener = Callable[[SessionState], None]


class Session:
    def __init__(
        self,
        client: Client,
        session_id: str,
        ttl_ms: int,
        *,
        opened_at: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.id = session_id
        self.ttl_ms = ttl_ms
        self.state = SessionState.CONNECTED
        self._clock = clock
        # The open counts as the first heartbeat, from when it was sent (the
        # server may have started the ttl any time after that).
        self._last_ack_s = clock() if opened_at is None else opened_at
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Session({self.id!r}, ttl_ms={self.ttl_ms}, state={self.state.value})"

    @property
    def acknowledged_at(self) -> float:
        """When (on the client's monotonic clock) the newest acknowledged
        heartbeat was sent."""
        return self._last_ack_s

    @property
    def interval_s(self) -> float:
        return self.ttl_ms / 3000

    @property
    def alive(self) -> bool:
        """Not lost nor closed (it may be suspended)."""
        return self.state in (SessionState.CONNECTED, SessionState.SUSPENDED)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def wait_for(self, *states: SessionState) -> SessionState:
        while self.state not in states:
            self._changed.clear()
            await self._changed.wait()
        return self.state

    def start(self) -> None:
        self.client.live_sessions.add(self)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._keep_alive(), name=f"session {self.id}"
            )

    async def close(self) -> None:
        """Stop heartbeating and close the session on the server (its
        ephemerals go with it). Safe to call more than once."""
        self.client.live_sessions.discard(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # a cancel of our caller still reaches it
            self._task = None
        if self.state is not SessionState.LOST and self.state is not SessionState.CLOSED:
            try:
                await self.client.close_session(self.id)
            finally:
                self._set(SessionState.CLOSED)

    # ---- the background task ----------------------------------------------------------

    def _set(self, state: SessionState) -> None:
        if state is self.state:
            return
        self.state = state
        self._changed.set()
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                log.exception("session listener failed")

    def _acked(self, sent_at: float) -> None:
        self._last_ack_s = max(self._last_ack_s, sent_at)
        self._set(SessionState.CONNECTED)

    def _expired_locally(self) -> bool:
        return self._clock() - self._last_ack_s > self.ttl_ms / 1000

    async def _keep_alive(self) -> None:
        socket_ok = dict.fromkeys(self.client.endpoints, True)
        while True:
            if self._expired_locally():
                self._set(SessionState.LOST)
                return
            endpoint = self.client.endpoint
            if socket_ok[endpoint]:
                outcome = await self._over_socket(endpoint)
                if outcome == "lost":
                    return
                if outcome == "refused":
                    socket_ok[endpoint] = False
                else:
                    # The socket ended without news of the session: say so
                    # at once, then heartbeat through the next node.
                    self._set(SessionState.SUSPENDED)
            sent_at = self._clock()
            left_s = self.ttl_ms / 1000 - (sent_at - self._last_ack_s)
            try:
                # Retried over the endpoints, for ttl/3 at most: a heartbeat
                # not acknowledged by then makes the session SUSPENDED.
                async with asyncio.timeout(max(min(left_s, self.interval_s), 0.01)):
                    await self.client.heartbeat(self.id)
            except SessionExpired:
                self._set(SessionState.LOST)
                return
            except (TimeoutError, CoordError):
                # No endpoint took it: suspended; try again (the loop
                # declares the session lost once a ttl has passed).
                self._set(SessionState.SUSPENDED)
                if self._clock() - sent_at < self.interval_s:
                    await asyncio.sleep(min(self.interval_s, 0.5))
                continue
            self._acked(sent_at)
            if not socket_ok[self.client.endpoint]:
                await asyncio.sleep(self.interval_s)

    async def _over_socket(self, endpoint: str) -> str:
        """Heartbeat on a keepalive socket until it ends: "lost" (the server
        says the session is gone), "refused" (this endpoint does not upgrade:
        heartbeat over HTTP there) or "broken" (moved to the next endpoint)."""
        url = f"{endpoint}/v1/sessions/{quote(self.id, safe='')}/keepalive"
        try:
            async with asyncio.timeout(self.interval_s):
                ws = await self.client.http.ws_connect(url, autoping=False)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 404:
                self._set(SessionState.LOST)
                return "lost"
            if exc.status >= 500:
                self.client.next_endpoint()
                return "broken"
            return "refused"
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.client.next_endpoint()
            return "broken"
        try:
            while True:
                sent_at = self._clock()
                await ws.send_str("h")
                await ws.ping()
                due = sent_at + self.interval_s
                while (left := due - self._clock()) > 0:
                    try:
                        msg = await ws.receive(timeout=left)
                    except TimeoutError:
                        break
                    if msg.type is WSMsgType.PONG:
                        self._acked(sent_at)
                    elif msg.type in _SOCKET_ENDED:
                        if ws.close_code == WS_SESSION_EXPIRED:
                            self._set(SessionState.LOST)
                            return "lost"
                        self.client.next_endpoint()
                        return "broken"
                if self._last_ack_s < sent_at:
                    # No pong within ttl/3: this node is slow or gone.
                    self.client.next_endpoint()
                    return "broken"
        except (aiohttp.ClientError, OSError):
            self.client.next_endpoint()
            return "broken"
        finally:
            await ws.close()


_SOCKET_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)
