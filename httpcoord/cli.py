"""``httpcoord`` command line: ``httpcoord serve`` runs one node."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import secrets
import socket
import sqlite3
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import click
from aiohttp import web

from httpcoord import __version__, logs
from httpcoord.cli_client import register as register_client_commands
from httpcoord.cluster.node import ClusterConfig, NodeLimits
from httpcoord.cluster.node_storage import SnapshotCorrupt, StorageCorrupt, StorageMismatch
from httpcoord.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
    Config,
    Limits,
    parse_listen,
    parse_peers,
)
from httpcoord.errors import DiskFull
from httpcoord.routes import cors

_LIMITS = Limits()
_NODE = NodeLimits()
_CLUSTER = ClusterConfig()
# Connections the kernel queues on the listener before they are accepted
# (aiohttp's own default).
_LISTEN_BACKLOG = 128


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _peers(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[int, str] | None:
    if value is None:
        return None
    try:
        return parse_peers(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _optional_listen(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    return None if value is None else _listen(ctx, param, value)


# TOML keys spelled like the flag where the parameter's name differs.
_CONFIG_ALIASES = {"id": "node_id", "cors_origin": "cors_origins"}


def _load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """``--config FILE``: a TOML file whose keys are the long option names
    (``peer-listen`` or ``peer_listen``); the command line and HTTPCOORD_*
    variables override it."""
    if value is None:
        return None
    try:
        with value.open("rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"cannot read {value}: {exc}") from None
    assert isinstance(ctx.command, click.Command)
    known = {p.name for p in ctx.command.params if p.name and p.name != "config"}
    repeatable = {p.name for p in ctx.command.params if getattr(p, "multiple", False)}
    defaults: dict[str, object] = {}
    for key, item in raw.items():
        name = key.replace("-", "_")
        name = _CONFIG_ALIASES.get(name, name)
        if name not in known:
            raise click.BadParameter(f"{value}: unknown setting {key!r}")
        if name == "peers" and isinstance(item, dict):
            item = ",".join(f"{k}={v}" for k, v in item.items())  # [peers] 1 = "host:port"
        if name in repeatable:  # a list, or one value
            defaults[name] = [str(i) for i in item] if isinstance(item, list) else [str(item)]
            continue
        defaults[name] = str(item) if not isinstance(item, str) else item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="httpcoord")
def main() -> None:
    """httpcoord: ZooKeeper's data model and guarantees over HTTP/JSON."""


register_client_commands(main)  # get, set, create, ls, ... (httpcoord/cli_client.py)


@main.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="TOML file of settings (keys are these option names); flags and HTTPCOORD_* override it",
)
@click.option(
    "--id",
    "node_id",
    show_envvar=True,
    envvar="HTTPCOORD_ID",
    type=click.IntRange(1),
    default=1,
    help="this node's id in --peers (ids are never reused)",
)
@click.option(
    "--peers",
    show_envvar=True,
    envvar="HTTPCOORD_PEERS",
    callback=_peers,
    help="the founding members' peer addresses, ID=HOST:PORT,...; none: a cluster of one",
)
@click.option(
    "--peer-listen",
    show_envvar=True,
    envvar="HTTPCOORD_PEER_LISTEN",
    callback=_optional_listen,
    help="peer listener (Raft traffic), HOST:PORT; default: this node's address in --peers",
)
@click.option(
    "--advertise-url",
    show_envvar=True,
    envvar="HTTPCOORD_ADVERTISE_URL",
    help="how clients reach this node, shown in /v1/cluster; default: from --listen",
)
@click.option(
    "--cluster-token",
    show_envvar=True,
    envvar="HTTPCOORD_CLUSTER_TOKEN",
    default=_CLUSTER.cluster_token,
    help="mixed into the cluster id fixed at the first start, to keep clusters apart",
)
@click.option(
    "--tick-ms",
    show_envvar=True,
    envvar="HTTPCOORD_TICK_MS",
    type=click.IntRange(1),
    default=_CLUSTER.tick_ms,
    help="one consensus tick: leader heartbeats go out every tick",
)
@click.option(
    "--election-ticks",
    show_envvar=True,
    envvar="HTTPCOORD_ELECTION_TICKS",
    type=click.IntRange(2),
    default=_CLUSTER.election_ticks,
    help="a follower that hears no leader for [this, 2 x this) ticks starts an election",
)
@click.option(
    "--request-timeout-ms",
    show_envvar=True,
    envvar="HTTPCOORD_REQUEST_TIMEOUT_MS",
    type=click.IntRange(1),
    default=_NODE.request_timeout_ms,
    help="longest a write or a consistent read waits before 503/504",
)
@click.option(
    "--listen",
    show_envvar=True,
    envvar="HTTPCOORD_LISTEN",
    default=DEFAULT_LISTEN,
    callback=_listen,
    help="client HTTP listener, HOST:PORT",
)
@click.option(
    "--data-dir",
    show_envvar=True,
    envvar="HTTPCOORD_DATA_DIR",
    default=DEFAULT_DATA_DIR,
    type=click.Path(file_okay=False, path_type=Path),
    help="where the log and snapshots live",
)
@click.option(
    "--max-data-bytes",
    show_envvar=True,
    envvar="HTTPCOORD_MAX_DATA_BYTES",
    type=click.IntRange(0),
    default=_LIMITS.data_bytes_max,
    help="largest znode data accepted",
)
@click.option(
    "--max-path-length",
    show_envvar=True,
    envvar="HTTPCOORD_MAX_PATH_LENGTH",
    type=click.IntRange(1),
    default=_LIMITS.path_length_max,
    help="longest znode path, in characters",
)
@click.option(
    "--max-request-bytes",
    show_envvar=True,
    envvar="HTTPCOORD_MAX_REQUEST_BYTES",
    type=click.IntRange(1024),
    default=_LIMITS.request_bytes_max,
    help="largest JSON request body (multi)",
)
@click.option(
    "--max-multi-ops",
    show_envvar=True,
    envvar="HTTPCOORD_MAX_MULTI_OPS",
    type=click.IntRange(1),
    default=_LIMITS.multi_ops_max,
    help="most ops in one multi",
)
@click.option(
    "--max-pending-writes",
    show_envvar=True,
    envvar="HTTPCOORD_MAX_PENDING_WRITES",
    type=click.IntRange(1),
    default=_NODE.pending_proposals_max,
    help="writes queued for the log before new ones get 429",
)
@click.option(
    "--snapshot-entries",
    show_envvar=True,
    envvar="HTTPCOORD_SNAPSHOT_ENTRIES",
    type=click.IntRange(1),
    default=_NODE.snapshot_entries,
    help="ops applied (a multi counts each of its ops) after which the tree is snapshotted"
    " and the log truncated (also after 64 MiB of log)",
)
@click.option(
    "--session-ttl-min-ms",
    show_envvar=True,
    envvar="HTTPCOORD_SESSION_TTL_MIN_MS",
    type=click.IntRange(1),
    default=_LIMITS.session_ttl_min_ms,
    help="shortest session ttl granted (shorter requests are raised to it)",
)
@click.option(
    "--session-ttl-max-ms",
    show_envvar=True,
    envvar="HTTPCOORD_SESSION_TTL_MAX_MS",
    type=click.IntRange(1),
    default=_LIMITS.session_ttl_max_ms,
    help="longest session ttl granted (longer requests are lowered to it)",
)
@click.option(
    "--container-check-ms",
    show_envvar=True,
    envvar="HTTPCOORD_CONTAINER_CHECK_MS",
    type=click.IntRange(1),
    default=_NODE.container_check_ms,
    help="how often empty containers and expired TTL nodes are removed",
)
@click.option(
    "--watch-history-events",
    show_envvar=True,
    envvar="HTTPCOORD_WATCH_HISTORY_EVENTS",
    type=click.IntRange(1),
    default=_NODE.watch_history_events,
    help="events kept for watchers that resume with since / Last-Event-ID",
)
@click.option(
    "--watch-history-bytes",
    show_envvar=True,
    envvar="HTTPCOORD_WATCH_HISTORY_BYTES",
    type=click.IntRange(1024),
    default=_NODE.watch_history_bytes,
    help="approximate bytes of kept events",
)
@click.option(
    "--max-watchers-per-client",
    show_envvar=True,
    envvar="HTTPCOORD_MAX_WATCHERS_PER_CLIENT",
    type=click.IntRange(1),
    default=_LIMITS.watchers_per_client_max,
    help="open watches from one client address; beyond, 429",
)
@click.option(
    "--watch-buffer-events",
    show_envvar=True,
    envvar="HTTPCOORD_WATCH_BUFFER_EVENTS",
    type=click.IntRange(1),
    default=_LIMITS.watch_queue_events_max,
    help="events buffered for one slow watcher before it is cut off",
)
@click.option(
    "--watch-initial-nodes",
    show_envvar=True,
    envvar="HTTPCOORD_WATCH_INITIAL_NODES",
    type=click.IntRange(1),
    default=_LIMITS.watch_initial_nodes_max,
    help="znodes a watch with initial=true may send as its state; beyond, 413",
)
@click.option(
    "--children-page",
    show_envvar=True,
    envvar="HTTPCOORD_CHILDREN_PAGE",
    type=click.IntRange(1),
    default=_LIMITS.children_page_max,
    help="child names in one ?children=true answer; more come in pages",
)
@click.option(
    "--sse-keepalive-ms",
    show_envvar=True,
    envvar="HTTPCOORD_SSE_KEEPALIVE_MS",
    type=click.IntRange(10),
    default=_LIMITS.sse_keepalive_ms,
    help="comment line sent on idle SSE streams",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    show_envvar=True,
    envvar="HTTPCOORD_CORS_ORIGIN",
    help="a browser origin (https://host:port) whose pages may call the API; repeat for"
    " more, * for any (variable: space-separated)",
)
@click.option(
    "--read-workers",
    show_envvar=True,
    envvar="HTTPCOORD_READ_WORKERS",
    type=click.IntRange(0, 256),
    default=0,
    help="processes beside the node that answer reads and watches on its port (one per spare core)",
)
@click.option(
    "--log-level",
    show_envvar=True,
    envvar="HTTPCOORD_LOG_LEVEL",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="least severe log message written to stderr",
)
@click.option(
    "--log-format",
    show_envvar=True,
    envvar="HTTPCOORD_LOG_FORMAT",
    default="text",
    type=click.Choice(logs.FORMATS),
    help="text for a terminal; json (one object per line) or logfmt for a log pipeline",
)
@click.option(
    "--access-log/--no-access-log",
    show_envvar=True,
    envvar="HTTPCOORD_ACCESS_LOG",
    default=False,
    help="one line per request: method, path, status, milliseconds, request id",
)
def serve(
    node_id: int,
    peers: dict[int, str] | None,
    peer_listen: tuple[str, int] | None,
    advertise_url: str | None,
    cluster_token: str,
    tick_ms: int,
    election_ticks: int,
    request_timeout_ms: int,
    listen: tuple[str, int],
    data_dir: Path,
    max_data_bytes: int,
    max_path_length: int,
    max_request_bytes: int,
    max_multi_ops: int,
    max_pending_writes: int,
    snapshot_entries: int,
    session_ttl_min_ms: int,
    session_ttl_max_ms: int,
    container_check_ms: int,
    watch_history_events: int,
    watch_history_bytes: int,
    max_watchers_per_client: int,
    watch_buffer_events: int,
    watch_initial_nodes: int,
    children_page: int,
    sse_keepalive_ms: int,
    cors_origins: tuple[str, ...],
    read_workers: int,
    log_level: str,
    log_format: str,
    access_log: bool,
) -> None:
    """Run one httpcoord node: a member of the cluster named by --peers, or a
    cluster of one."""
    from httpcoord.routes.app import FATAL, create_app

    logs.configure(log_level, log_format, node_id)
    host, port = listen
    if peers is None:
        if peer_listen is not None:
            _fail("--peer-listen needs --peers (the members of the cluster)")
        peers = {node_id: ""}
    elif node_id not in peers:
        _fail(f"--id {node_id} is not one of the members in --peers ({_ids(peers)})")
    elif peer_listen is None:
        peer_listen = parse_listen(peers[node_id])
    if advertise_url is None:
        shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
        advertise_url = f"http://{_host_port(shown, port)}"
    config = Config(
        host=host,
        port=port,
        data_dir=data_dir,
        limits=Limits(
            data_bytes_max=max_data_bytes,
            path_length_max=max_path_length,
            request_bytes_max=max_request_bytes,
            multi_ops_max=max_multi_ops,
            session_ttl_min_ms=session_ttl_min_ms,
            session_ttl_max_ms=max(session_ttl_min_ms, session_ttl_max_ms),
            watchers_per_client_max=max_watchers_per_client,
            watch_queue_events_max=watch_buffer_events,
            watch_initial_nodes_max=watch_initial_nodes,
            children_page_max=children_page,
            sse_keepalive_ms=sse_keepalive_ms,
        ),
        node=NodeLimits(
            pending_proposals_max=max_pending_writes,
            snapshot_entries=snapshot_entries,
            container_check_ms=container_check_ms,
            watch_history_events=watch_history_events,
            watch_history_bytes=watch_history_bytes,
            request_timeout_ms=request_timeout_ms,
        ),
        cluster=ClusterConfig(
            node_id=node_id,
            peers=peers,
            cluster_token=cluster_token,
            client_url=advertise_url,
            tick_ms=tick_ms,
            election_ticks=election_ticks,
        ),
        peer_listen=peer_listen,
        read_workers=read_workers,
        cors_origins=cors_origins,
        access_log=access_log,
        log_format=log_format,
    )
    for origin in cors_origins:
        try:
            cors.check_origin(origin)
        except ValueError as exc:
            _fail(f"--cors-origin {origin!r}: {exc}")
    if read_workers and port == 0:
        _fail("--read-workers needs a fixed --listen port (the workers listen on it too)")
    # Both startup failures a user can cause (a port already taken, a data dir
    # held by another process) end here as one line and exit 1, before the
    # node says it is serving: bind first (cheap), then look at the lock.
    try:
        sockets = _bind(host, port, reuse_port=read_workers > 0)
    except OSError as exc:
        _fail(f"cannot listen on {_host_port(host, port)}: {_reason(exc)}")
    # The read workers reach this process on an abstract unix socket (no
    # file to leave behind, no path length limit).
    workers_socket = f"httpcoord-{os.getpid()}-{secrets.token_hex(4)}" if read_workers else None
    peer_sockets: list[socket.socket] = []
    if peer_listen is not None:
        try:
            peer_sockets = _bind(*peer_listen)
        except OSError as exc:
            _fail(f"cannot listen for peers on {_host_port(*peer_listen)}: {_reason(exc)}")
    if _data_dir_held(data_dir):
        _fail(_held_message(data_dir))
    loop = _new_loop()
    bound = ", ".join(_host_port(*s.getsockname()[:2]) for s in sockets)

    def announce(*_: object) -> None:
        # Called by run_app once the node is open and the listener accepts.
        peers_note = (
            f", node {node_id} of {_ids(peers)}, peers on {_host_port(*peer_listen)}"
            if peer_listen is not None
            else ""
        )
        logging.getLogger("httpcoord").info(
            "httpcoord %s serving on http://%s, data in %s%s",
            __version__,
            bound,
            data_dir,
            peers_note,
        )

    app = create_app(config, peer_sockets, workers_socket)
    try:
        # run_app turns SIGINT and SIGTERM into a graceful shutdown: the
        # listener closes, the commit loop finishes its batch, the log is
        # closed; exit 0 (1 when the node stopped itself: FATAL says why).
        web.run_app(
            app,
            sock=sockets,
            path=None if workers_socket is None else "\0" + workers_socket,
            loop=loop,
            print=announce,
            access_log=None,
            shutdown_timeout=5.0,
            # A client that goes away cancels its handler: a watch that loses
            # its connection is unsubscribed at once.
            handler_cancellation=True,
        )
    except StorageMismatch as exc:
        # A data dir of another node or cluster, or of the single node that
        # needs a start alone first: the message says what to do.
        _fail(str(exc))
    except (StorageCorrupt, SnapshotCorrupt, sqlite3.DatabaseError, DiskFull) as exc:
        # A damaged data dir (a torn copy, a bad disk) or no room to open it:
        # one line, no traceback; nothing was served from it.
        _fail(f"cannot open the data dir {data_dir}: {exc}")
    except RuntimeError:
        # Another process took the lock between the check above and the
        # node's own open: still one line. Anything else is a real crash.
        if _data_dir_held(data_dir):
            _fail(_held_message(data_dir))
        raise
    finally:
        for sock in (*sockets, *peer_sockets):
            sock.close()
    if app[FATAL]:
        _fail(app[FATAL][0])
    # Everything is saved and closed. Tearing down the tree object by object
    # (and the interpreter's last collection over it) took seconds at a
    # million znodes; the process has nothing left to do.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@main.command("read-worker", hidden=True)
@click.option("--host", required=True)
@click.option("--port", type=int, required=True)
@click.option("--settings", "settings_json", required=True, help="WorkerSettings as JSON")
def read_worker(host: str, port: int, settings_json: str) -> None:
    """A read worker of the node listening on HOST:PORT (started by the node
    itself: see httpcoord.workers)."""
    from httpcoord.workers.worker import WorkerSettings, serve_worker

    settings = WorkerSettings.from_json(settings_json)
    logs.configure("info", settings.log_format, settings.node_id, settings.worker_id)
    loop = _new_loop()
    try:
        loop.run_until_complete(serve_worker(settings, lambda: _bind(host, port, True)))
    except OSError as exc:
        _fail(f"read worker {settings.worker_id} stopped: {exc}")
    finally:
        loop.close()


GC_YOUNG_OBJECTS = 10_000  # allocations between two passes of the young generation


def _new_loop() -> asyncio.AbstractEventLoop:
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # uvloop is optional off Linux/macOS
        loop_factory = asyncio.new_event_loop
    # The tree is millions of long-lived objects: collect the young generation
    # less often (the default 700 allocations made GC ~7% of a write's CPU),
    # but not so seldom that one pass is long: while a big tree was built, a
    # young generation of 50,000 objects (stats, events, znodes) took 25-35
    # ms to scan, of 20,000 12-39 ms, of 10,000 11-13 ms (bench_big_tree.py).
    gc.set_threshold(GC_YOUNG_OBJECTS, 20, 20)
    loop = loop_factory()
    asyncio.set_event_loop(loop)
    return loop


def _ids(peers: dict[int, str]) -> str:
    return ",".join(str(i) for i in sorted(peers))


def _fail(message: str) -> NoReturn:
    click.echo(f"httpcoord: {message}", err=True)
    sys.exit(1)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(exc: OSError) -> str:
    # "Address already in use" reads as "address already in use" mid-line.
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _bind(host: str, port: int, reuse_port: bool = False) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to (as aiohttp's
    own TCP site would open), bound before the node opens its data dir, so a
    port in use is reported before recovery and before "serving".
    ``reuse_port``: the node's read workers listen on the same address."""
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # "localhost" gives ::1 and 127.0.0.1: each gets its own socket.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(_LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _data_dir_held(data_dir: Path) -> bool:
    """Whether another process holds the data dir's ``LOCK`` (the node takes
    the same flock when it opens the dir; this only looks)."""
    try:
        fd = os.open(data_dir / "LOCK", os.O_RDWR)
    except OSError:
        return False  # no lock file (a new data dir) or not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)  # closing drops a lock this probe may have taken
    return False


def _held_message(data_dir: Path) -> str:
    return (
        f"data dir {data_dir} is in use by another httpcoord process; "
        "stop it or choose another --data-dir"
    )


@main.command("dev-cluster", context_settings={"ignore_unknown_options": True})
@click.option("--nodes", type=click.IntRange(1, 9), default=3, help="how many nodes")
@click.option(
    "--base-port",
    type=click.IntRange(1024, 64000),
    default=8181,
    help="node N listens on BASE + 100 x (N-1), its peers on the port above",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("./httpcoord-dev"),
    help="each node's data in DIR/nodeN (kept between runs)",
)
@click.argument("serve_args", nargs=-1, type=click.UNPROCESSED)
def dev_cluster(nodes: int, base_port: int, data_dir: Path, serve_args: tuple[str, ...]) -> None:
    """Start a local cluster of real nodes on 127.0.0.1 and stop it on Ctrl-C.
    Arguments after the options go to every `httpcoord serve`."""
    from httpcoord import dev_cluster as dev

    sys.exit(dev.run(nodes, base_port, data_dir, serve_args))
