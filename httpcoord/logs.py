"""The server's log lines: plain text for a terminal, or structured (JSON
lines or logfmt) for a log pipeline, chosen with ``--log-format``; and the
request id every line written while a request is handled carries.

A request's id is the client's ``X-Request-Id`` when it is a sane token
(1-128 of ``A-Z a-z 0-9 . _ : -``), else a new random one; the answer
carries it back in ``X-Request-Id``. A write a follower forwards takes its id
to the leader (``forward``), so the lines both write about it share it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import re
import secrets
from contextvars import ContextVar

import orjson

REQUEST_ID_HEADER = "X-Request-Id"
# The id of the request being handled ("" outside one): set by the routes'
# middleware, read by log records and by the forwarder.
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")
FORMATS = ("text", "json", "logfmt")

_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(where)s: %(message)s%(request)s"
_LOGFMT_BARE = re.compile(r"[^\s=\"]+")
_PREFIX = secrets.token_hex(4)
_COUNTER = itertools.count(1)


def request_id(header: str | None) -> str:
    """The client's id if it is a sane token, else a fresh one: this
    process's random prefix and a counter (no system call per request)."""
    if header is not None and _SANE_ID.fullmatch(header):
        return header
    return f"{_PREFIX}{next(_COUNTER):08x}"


def configure(level: str, fmt: str, node_id: int, worker_id: int = 0) -> None:
    """Send every log line to stderr in ``fmt``, tagged with this process."""
    handler = logging.StreamHandler()
    handler.addFilter(_Context(node_id, worker_id))
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    elif fmt == "logfmt":
        handler.setFormatter(_LogfmtFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


class _Context(logging.Filter):
    """Adds the node, the worker and the request id to every record."""

    def __init__(self, node_id: int, worker_id: int) -> None:
        super().__init__()
        self.node_id = node_id
        self.worker_id = worker_id
        self.where = f"[worker {worker_id}]" if worker_id else ""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        record.request_id = rid
        record.node = self.node_id
        record.worker = self.worker_id
        record.where = self.where
        record.request = f" (request {rid})" if rid else ""
        return True


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, object]:
    fields: dict[str, object] = {
        "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
        "node": getattr(record, "node", 0),
    }
    worker = getattr(record, "worker", 0)
    if worker:
        fields["worker"] = worker
    rid = getattr(record, "request_id", "")
    if rid:
        fields["request_id"] = rid
    if record.exc_info:
        fields["exc"] = formatter.formatException(record.exc_info)
    return fields


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(_fields(record, self)).decode()


class _LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record, self).items())


def _logfmt_value(value: object) -> str:
    text = str(value)
    if _LOGFMT_BARE.fullmatch(text):
        return text
    return orjson.dumps(text).decode()  # quoted, with \n and " escaped
