"""A follower's writes, forwarded to the leader in batches.

Every write a follower takes goes to the leader in one hop
(``/peer/v1/propose``), which logs it and answers the (index, term) its entry
got. One request per write would cost a follower an HTTP client request and
the leader an HTTP server request per write, which at 64 clients was most of
a forwarded write's CPU. So the writes submitted in one turn of the event
loop travel together: one request carries them all (newline-separated txn
encodings; the txn codec never emits a newline), and the answer lists one
``[index, term]`` or one problem per txn, in order. A few batches may be in
flight at once, so a slow fsync on the leader does not stop the next batch
from being sent.

Errors are per batch where the request failed (``Unavailable`` if it never
reached the leader, ``OutcomeUnknown`` if it broke after it was sent) and
per txn where the leader refused one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from httpcoord.cluster.driver import Transport
from httpcoord.cluster.transport import OutcomeUnknown as PeerOutcomeUnknown
from httpcoord.cluster.transport import PeerCallFailed, PeerUnavailable
from httpcoord.errors import CoordError, OutcomeUnknown, Unavailable, error_from_problem
from httpcoord.logs import REQUEST_ID_HEADER

log = logging.getLogger(__name__)

PROPOSE_PATH = "/peer/v1/propose"


@dataclass(frozen=True, slots=True)
class ForwardLimits:
    batch_txns_max: int = 1024  # txns in one request
    batch_bytes_max: int = 4 * 1024 * 1024  # their encoded bytes (under the peer frame bound)
    inflight_batches_max: int = 4  # requests in flight to the leader at once


Placed = tuple[int, int]  # (log index, term) of the txn's entry


class Forwarder:
    def __init__(
        self, transport: Callable[[], Transport], limits: ForwardLimits, timeout_ms: int
    ) -> None:
        self._transport = transport  # looked up per call: the node may swap it at open
        self.limits = limits
        self.timeout_ms = timeout_ms
        # (leader, txn, its answer, the id of the request it came in)
        self._queue: list[tuple[int, bytes, asyncio.Future[Placed], str]] = []
        self._flush_scheduled = False
        self._inflight = 0
        self.batches_sent = 0
        self.txns_sent = 0

    def forward(self, leader: int, txn: bytes, request_id: str = "") -> asyncio.Future[Placed]:
        """Queue one encoded txn for ``leader``; the future gets its (index,
        term). ``request_id`` goes with it, for the leader's log lines."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Placed] = loop.create_future()
        self._queue.append((leader, txn, future, request_id))
        if not self._flush_scheduled:
            # Everything submitted until this callback runs goes in one batch.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._queue and self._inflight < self.limits.inflight_batches_max:
            batch = self._take_batch()
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._inflight -= 1
        if self._queue and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _take_batch(self) -> list[tuple[int, bytes, asyncio.Future[Placed], str]]:
        """The longest prefix of the queue for one leader (the queue may span
        a leader change) within the batch bounds; order is kept."""
        leader = self._queue[0][0]
        size = 0
        taken = 0
        for to, txn, _, _ in self._queue:
            if to != leader or taken >= self.limits.batch_txns_max:
                break
            if taken and size + len(txn) > self.limits.batch_bytes_max:
                break
            size += len(txn) + 1
            taken += 1
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    async def _send(self, batch: list[tuple[int, bytes, asyncio.Future[Placed], str]]) -> None:
        leader = batch[0][0]
        live = [(txn, f, rid) for _, txn, f, rid in batch if not f.done()]
        if not live:
            return
        body = b"\n".join(txn for txn, _, _ in live)
        # One id per txn, in order (ids never hold a comma: logs.request_id).
        headers = {REQUEST_ID_HEADER: ",".join(rid or "-" for _, _, rid in live)}
        self.batches_sent += 1
        self.txns_sent += len(live)
        error: CoordError | None = None
        answers: list[object] = []
        try:
            raw = await self._transport().call(
                leader, PROPOSE_PATH, body, self.timeout_ms, headers=headers
            )
            answers = orjson.loads(raw)
            if type(answers) is not list or len(answers) != len(live):
                raise ValueError("the answer does not match the batch")
        except PeerUnavailable:
            error = Unavailable(f"the leader (node {leader}) cannot be reached")
        except PeerOutcomeUnknown:
            error = OutcomeUnknown(
                f"the connection to the leader (node {leader}) broke after the write was sent"
            )
        except PeerCallFailed as exc:
            error = _refusal(exc.body) or Unavailable(
                f"the leader (node {leader}) refused the writes: {exc}"
            )
        except (orjson.JSONDecodeError, ValueError):
            error = OutcomeUnknown("the leader's answer could not be read")
        for i, (_, future, _) in enumerate(live):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
                continue
            answer = answers[i]
            if type(answer) is list and len(answer) == 2:
                future.set_result((int(answer[0]), int(answer[1])))
            else:
                future.set_exception(
                    error_from_problem(answer) or OutcomeUnknown("unreadable answer")
                )


def _refusal(body: bytes) -> CoordError | None:
    """A problem document from the leader, as the error it names."""
    try:
        return error_from_problem(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def encode_answers(answers: list[Placed | CoordError]) -> bytes:
    """The leader's answer to a batch: [index, term] or a problem, per txn."""
    return orjson.dumps(
        [a.problem() if isinstance(a, CoordError) else [a[0], a[1]] for a in answers]
    )
