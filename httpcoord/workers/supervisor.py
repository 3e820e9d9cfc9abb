"""The node's read workers as processes: started with the node, started
again when one exits (its feed ended, or it crashed), stopped with the node.

A worker whose node is killed outright sees its feed end and stops by
itself; nothing outlives the node for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from httpcoord.workers.worker import WorkerSettings

log = logging.getLogger(__name__)

_RESTART_DELAY_S_MIN = 0.5
_RESTART_DELAY_S_MAX = 10.0
_STABLE_S = 30.0  # a worker that ran this long restarts without delay growth
_STOP_WITHIN_S = 5.0


class Supervisor:
    def __init__(self, host: str, port: int, workers: list[WorkerSettings]) -> None:
        self.host = host
        self.port = port
        self.workers = workers
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        for settings in self.workers:
            self._tasks.append(
                asyncio.create_task(self._keep(settings), name=f"read-worker-{settings.worker_id}")
            )

    async def _keep(self, settings: WorkerSettings) -> None:
        loop = asyncio.get_running_loop()
        delay = _RESTART_DELAY_S_MIN
        while not self._stopping:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "httpcoord",
                "read-worker",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--settings",
                settings.to_json(),
                stdin=asyncio.subprocess.DEVNULL,
            )
            self._procs[settings.worker_id] = proc
            started = loop.time()
            code = await proc.wait()
            if self._stopping:
                return
            if loop.time() - started > _STABLE_S:
                delay = _RESTART_DELAY_S_MIN
            log.warning(
                "read worker %d (pid %d) exited with %d; starting it again in %.1f s",
                settings.worker_id,
                proc.pid,
                code,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(2 * delay, _RESTART_DELAY_S_MAX)

    async def stop(self) -> None:
        """SIGTERM every worker (each finishes its requests), SIGKILL the
        ones still there after _STOP_WITHIN_S."""
        self._stopping = True
        procs = [p for p in self._procs.values() if p.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(p.wait()) for p in procs]
        if waits:
            _, late = await asyncio.wait(waits, timeout=_STOP_WITHIN_S)
            for proc in procs:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if late:
                await asyncio.wait(late)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
