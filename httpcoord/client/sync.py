"""The same client for code without an event loop.

``SyncClient`` runs an asyncio ``Client`` on an event loop in a thread of
its own and waits for each call, so its methods are the async client's,
blocking. Sessions opened through it keep themselves alive on that thread,
whatever the caller's thread is doing.

    with SyncClient("127.0.0.1:8181,127.0.0.1:8281") as c:
        c.create("/app/config", b"v1", parents=True)
        for event in c.watch("/app", recursive=True):
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self, TypeVar

from httpcoord.client.aio import Client, RetryPolicy
from httpcoord.client.models import (
    Event,
    MultiResult,
    Node,
    Op,
    Resync,
    SessionInfo,
    Stat,
    WriteResult,
)
from httpcoord.client.session import Session, SessionState

T = TypeVar("T")


class SyncClient:
    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        request_timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        shuffle: bool = True,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="httpcoord-client", daemon=True
        )
        self._thread.start()
        self.aio = Client(
            endpoints, request_timeout_s=request_timeout_s, retry=retry, shuffle=shuffle
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.aio.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _run(self, coro: Awaitable[T]) -> T:
        if threading.get_ident() == self._thread.ident:
            # From a listener, say: waiting here would wait for ourselves.
            raise RuntimeError("a SyncClient cannot be called from its own loop's thread")

        async def wrapped() -> T:
            return await coro

        future = asyncio.run_coroutine_threadsafe(wrapped(), self._loop)
        try:
            return future.result()
        except BaseException:
            # Interrupted (Ctrl-C) or failed: the call must not run on.
            future.cancel()
            raise

    @property
    def last_zxid(self) -> int:
        return self.aio.last_zxid

    # ---- the async client's calls, blocking --------------------------------------------

    def get(self, path: str, *, children: bool = False, consistency: str | None = None) -> Node:
        return self._run(self.aio.get(path, children=children, consistency=consistency))

    def exists(self, path: str) -> Stat | None:
        return self._run(self.aio.exists(path))

    def get_children(self, path: str) -> list[str]:
        return self._run(self.aio.get_children(path))

    def create(self, path: str, data: bytes = b"", **kinds: Any) -> WriteResult:
        """``sequential``, ``parents``, ``ephemeral``, ``container``,
        ``ttl_ms`` and ``session`` as ``Client.create``."""
        return self._run(self.aio.create(path, data, **kinds))

    def set(self, path: str, data: bytes, version: int | None = None) -> WriteResult:
        return self._run(self.aio.set(path, data, version))

    def delete(
        self, path: str, version: int | None = None, *, recursive: bool = False
    ) -> WriteResult:
        return self._run(self.aio.delete(path, version, recursive=recursive))

    def multi(self, ops: Sequence[Op], *, session: str | None = None) -> MultiResult:
        return self._run(self.aio.multi(ops, session=session))

    def cluster(self) -> dict[str, Any]:
        return self._run(self.aio.cluster())

    def session_info(self, session_id: str) -> SessionInfo:
        return self._run(self.aio.session_info(session_id))

    def open_session(self, ttl_ms: int = 10_000) -> SyncSession:
        return SyncSession(self, self._run(self.aio.open_session(ttl_ms)))

    @contextmanager
    def session(self, ttl_ms: int = 10_000) -> Iterator[SyncSession]:
        session = self.open_session(ttl_ms)
        try:
            yield session
        finally:
            session.close()

    def watch(
        self, path: str, *, recursive: bool = False, since: int | None = None, data: bool = False
    ) -> Iterator[Event | Resync]:
        """A blocking iterator over the async watch; closing it (or leaving
        the loop) closes the stream."""
        stream = self.aio.watch(path, recursive=recursive, since=since, data=data)
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop.is_closed():
                with contextlib.suppress(RuntimeError):  # still running: cancelled above
                    self._run(stream.aclose())


class SyncSession:
    """A kept-alive session of a ``SyncClient``; ``state`` is read live."""

    def __init__(self, client: SyncClient, session: Session) -> None:
        self._client = client
        self.aio = session

    @property
    def id(self) -> str:
        return self.aio.id

    @property
    def ttl_ms(self) -> int:
        return self.aio.ttl_ms

    @property
    def state(self) -> SessionState:
        return self.aio.state

    def add_listener(self, listener: Callable[[SessionState], None]) -> None:
        """Called on the client's thread: hand work to your own thread."""
        self._client._loop.call_soon_threadsafe(self.aio.add_listener, listener)

    def close(self) -> None:
        self._client._run(self.aio.close())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
