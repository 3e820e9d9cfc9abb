"""Session liveness on the expiry authority: deadlines on a monotonic clock.

Pure and clock-free: every method takes ``now_ms``, so tests drive time by
hand. Heartbeats only move a deadline in memory (no log entry); what is
durable and replicated is the session itself, opened and closed by txns.
After a restart, or on a new authority, every open session starts with its
full ttl (``open`` at recovery), so no session dies because the server was
down.

One heap entry per session: a heartbeat only updates the deadline map, and
when the stale heap entry surfaces it is pushed back at the real deadline.
Checking costs O(log n) per session per ttl, not per heartbeat.
"""

from __future__ import annotations

import heapq


class SessionTracker:
    def __init__(self) -> None:
        self._ttl_ms: dict[str, int] = {}
        self._deadline_ms: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._expiring: set[str] = set()  # expiry decided, close txn in flight

    def __len__(self) -> int:
        return len(self._ttl_ms)

    def open(self, session_id: str, ttl_ms: int, now_ms: int) -> None:
        self._ttl_ms[session_id] = ttl_ms
        self._deadline_ms[session_id] = now_ms + ttl_ms
        self._expiring.discard(session_id)
        heapq.heappush(self._heap, (now_ms + ttl_ms, session_id))

    def touch(self, session_id: str, now_ms: int) -> bool:
        """A heartbeat: False if the session is unknown or already expiring."""
        ttl = self._ttl_ms.get(session_id)
        if ttl is None or session_id in self._expiring:
            return False
        self._deadline_ms[session_id] = now_ms + ttl
        return True

    def forget(self, session_id: str) -> None:
        """The session is closed (its heap entry is dropped when it surfaces)."""
        self._ttl_ms.pop(session_id, None)
        self._deadline_ms.pop(session_id, None)
        self._expiring.discard(session_id)

    def remaining_ms(self, session_id: str, now_ms: int) -> int | None:
        deadline = self._deadline_ms.get(session_id)
        return None if deadline is None else max(0, deadline - now_ms)

    def due(self, now_ms: int, limit: int) -> list[str]:
        """Sessions whose deadline has passed (deadline <= now), at most
        ``limit``; each is marked expiring so heartbeats now fail."""
        out: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms and len(out) < limit:
            _, sid = heapq.heappop(heap)
            deadline = self._deadline_ms.get(sid)
            if deadline is None or sid in self._expiring:
                continue  # closed meanwhile, or already being expired
            if deadline > now_ms:
                heapq.heappush(heap, (deadline, sid))  # heartbeat moved it
                continue
            self._expiring.add(sid)
            out.append(sid)
        return out

    def retry(self, session_id: str, now_ms: int) -> None:
        """The close txn did not go through: expire it again on the next check."""
        if session_id in self._ttl_ms:
            self._expiring.discard(session_id)
            self._deadline_ms[session_id] = now_ms
            heapq.heappush(self._heap, (now_ms, session_id))
