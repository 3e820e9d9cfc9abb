"""``httpcoord get|set|create|ls|tree|rm|stat|watch|lock|elect|session|cluster``:
the client commands of the command line, for users and operators.

Every command takes ``--endpoints`` (or ``HTTPCOORD_ENDPOINTS``) and
``--json``; humans get rich tables and a tree view (coloured only on a
terminal), scripts get one JSON document (one per line for ``watch``).
Each command is one ``asyncio.run`` of the async client; the client and
rich are imported when a command runs, so ``httpcoord serve`` does not pay
for them. ``docs/cli.md`` is the guide and holds the exit-code table below.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import quote

import click
import orjson

from httpcoord.errors import (
    BadArguments,
    BadVersion,
    Compacted,
    CoordError,
    DiskFull,
    InvalidPath,
    MultiFailed,
    NoChildrenForEphemerals,
    NodeExists,
    NoNode,
    NotEmpty,
    OutcomeUnknown,
    PayloadTooLarge,
    SessionExpired,
    TooManyRequests,
    Unavailable,
    UnsupportedMediaType,
    ZxidNotReached,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.progress import Progress
    from rich.text import Text

    from httpcoord.client import Client, Event, Node, Resync, Session, Stat, WriteResult
    from httpcoord.client.recipes.lock import Grant

DEFAULT_ENDPOINTS = "127.0.0.1:8181"
ENDPOINTS_ENV = "HTTPCOORD_ENDPOINTS"
LOCK_TOKEN_ENV = "HTTPCOORD_LOCK_TOKEN"
LOCK_NODE_ENV = "HTTPCOORD_LOCK_NODE"
LEADER_TOKEN_ENV = "HTTPCOORD_LEADER_TOKEN"
LEADER_ID_ENV = "HTTPCOORD_LEADER_ID"

# Data read from stdin or a file: far above any sensible --max-data-bytes
# (1 MiB by default), low enough that a wrong file fails before it is sent.
INPUT_BYTES_MAX = 256 * 1024 * 1024
# Reads in flight at once while walking a subtree (ls -l, tree).
WALK_REQUESTS_MAX = 16
# A walk longer than this shows a progress bar (on a terminal).
WALK_PROGRESS_NODES_MIN = 200
DEFAULT_SESSION_TTL_MS = 10_000
DEFAULT_GRACE_MS = 5_000
DIGEST_SHOWN_CHARS = 12


class Exit(enum.IntEnum):
    """The exit codes (docs/cli.md has the table)."""

    OK = 0
    ERROR = 1  # anything else: an unexpected answer, a server bug
    USAGE = 2  # click's own: an unknown option, a missing argument
    NOT_FOUND = 3  # NoNode, SessionExpired (no such session), Compacted
    CONFLICT = 4  # NodeExists, BadVersion, NotEmpty, MultiFailed
    UNAVAILABLE = 5  # no node could do it now: retrying later may work
    INVALID = 6  # the server refused the request as malformed or too large
    LOST = 7  # the session, lock or leadership held was lost while running
    TIMEOUT = 8  # lock/elect --timeout-ms passed before the grant
    CANNOT_EXECUTE = 126  # lock/elect: CMD is not executable (as shells say)
    COMMAND_NOT_FOUND = 127  # lock/elect: no such CMD
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


_EXIT_BY_ERROR: tuple[tuple[tuple[type[CoordError], ...], Exit], ...] = (
    ((NoNode, SessionExpired, Compacted), Exit.NOT_FOUND),
    ((NodeExists, BadVersion, NotEmpty, MultiFailed), Exit.CONFLICT),
    (
        (Unavailable, OutcomeUnknown, DiskFull, ZxidNotReached, TooManyRequests),
        Exit.UNAVAILABLE,
    ),
    (
        (
            BadArguments,
            InvalidPath,
            NoChildrenForEphemerals,
            PayloadTooLarge,
            UnsupportedMediaType,
        ),
        Exit.INVALID,
    ),
)


def exit_code_of(error: CoordError) -> Exit:
    for classes, code in _EXIT_BY_ERROR:
        if isinstance(error, classes):
            return code
    return Exit.ERROR


class CliError(Exception):
    """An outcome of the command itself, not an answer of the server: its
    code for the error line, and its exit code."""

    def __init__(self, code: str, detail: str, exit_code: Exit) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.exit_code = exit_code


def lost(detail: str) -> CliError:
    """What the command held (its session, lock or leadership) is gone."""
    return CliError("Lost", detail, Exit.LOST)


class Stopped(Exception):
    """SIGINT or SIGTERM arrived: ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---- the options every command takes ---------------------------------------------------


@dataclasses.dataclass(slots=True)
class Options:
    endpoints: str = DEFAULT_ENDPOINTS
    as_json: bool = False


def _options() -> Options:
    ctx = click.get_current_context()
    opts = ctx.meta.get("httpcoord.options")
    if not isinstance(opts, Options):
        opts = ctx.meta["httpcoord.options"] = Options()
    return opts


def _set_endpoints(ctx: click.Context, param: click.Parameter, value: str) -> None:
    if not any(item.strip() for item in value.split(",")):
        raise click.BadParameter("no endpoint given")
    _options().endpoints = value


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    _options().as_json = value


F = TypeVar("F", bound=Callable[..., Any])


def common(f: F) -> F:
    """``--endpoints`` and ``--json``, on every command."""
    f = click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="machine-readable output: one JSON document (one per line for watch)",
    )(f)
    return click.option(
        "--endpoints",
        envvar=ENDPOINTS_ENV,
        show_envvar=True,
        default=DEFAULT_ENDPOINTS,
        expose_value=False,
        callback=_set_endpoints,
        help="the cluster's client addresses, HOST:PORT,HOST:PORT,...",
    )(f)


def _znode_path(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.startswith("/"):
        raise click.BadParameter(f"a znode path is absolute (starts with /): {value!r}")
    return value


PATH_ARG = click.argument("path", callback=_znode_path)


# ---- output -------------------------------------------------------------------------------


class Output:
    """Where the command's results go: JSON documents or rich renderables
    on stdout, one-line errors on stderr."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._out: Console | None = None
        self._err: Console | None = None

    @property
    def out(self) -> Console:
        if self._out is None:
            self._out = _console(sys.stdout, stderr=False)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = _console(sys.stderr, stderr=True)
        return self._err

    def json(self, document: object) -> None:
        sys.stdout.buffer.write(orjson.dumps(document) + b"\n")
        sys.stdout.buffer.flush()

    def line(self, text: str | Text) -> None:
        """One line, never wrapped (a long path stays whole)."""
        self.out.print(text, soft_wrap=True)
        self.out.file.flush()

    def show(self, renderable: RenderableType) -> None:
        """A table or a tree."""
        self.out.print(renderable)
        self.out.file.flush()

    def note(self, text: str) -> None:
        """A word for the human at a terminal (stderr, so stdout stays the
        command's own output); nothing when stderr is not a terminal."""
        if not self.as_json and self.err.is_terminal:
            self.err.print(text, style="dim")

    def error(self, code: str, detail: str) -> None:
        if self.as_json:
            message = orjson.dumps({"code": code, "detail": detail}).decode()
        else:
            message = f"httpcoord: {code}: {detail}"
        # One line whatever the detail holds (a server's message may not be).
        sys.stderr.write(" ".join(message.splitlines()) + "\n")
        sys.stderr.flush()


def _console(file: IO[str], *, stderr: bool) -> Console:
    from rich.console import Console

    # Not a terminal: no colour (rich's own choice) and a wide line, so a
    # table piped to a file keeps one row per line.
    width = None if file.isatty() or "COLUMNS" in os.environ else 200
    # Names are shown as they are: no markup, emoji codes or highlighting.
    return Console(
        file=file, stderr=stderr, markup=False, emoji=False, highlight=False, width=width
    )


# ---- running one command --------------------------------------------------------------------


Body = Callable[["Client", Output], Awaitable["int | None"]]


def run(body: Body, *, ends_on_signal: bool = False) -> NoReturn:
    """Run ``body`` with a client of the endpoints and exit with its code.
    ``ends_on_signal``: Ctrl-C and SIGTERM are this command's normal end
    (watch, a held ephemeral, a kept session): exit 0, not 130."""
    opts = _options()
    out = Output(opts.as_json)
    try:
        code = asyncio.run(_with_client(opts, out, body, ends_on_signal))
    except KeyboardInterrupt:
        code = Exit.OK if ends_on_signal else Exit.INTERRUPTED
    except Stopped as stop:
        code = Exit.OK if ends_on_signal else 128 + stop.signum
    except CoordError as error:
        out.error(error.code, _detail(error))
        code = exit_code_of(error)
    except CliError as error:
        out.error(error.code, error.detail)
        code = error.exit_code
    except BrokenPipeError:
        # The reader went away (`httpcoord watch ... | head -1`): end quietly,
        # as rich does for its own output, with nothing left to flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = Exit.ERROR
    except OSError as error:  # a --file that cannot be read
        out.error("OSError", str(error))
        code = Exit.ERROR
    sys.exit(int(code))


def _detail(error: CoordError) -> str:
    """The detail, led by the node or session it is about when the
    server's detail does not name it ("/a/b: node does not exist")."""
    subject = error.extra.get("path") or error.extra.get("session")
    if isinstance(subject, str) and subject and subject not in error.detail:
        return f"{subject}: {error.detail}"
    return error.detail


async def _with_client(opts: Options, out: Output, body: Body, ends_on_signal: bool) -> int:
    from httpcoord.client import Client

    client = Client(opts.endpoints)
    try:
        if not ends_on_signal:
            return await body(client, out) or Exit.OK
        with _stop_on_signals() as stopped:
            work = asyncio.ensure_future(body(client, out))
            await _first_of(work, stopped)
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                return Exit.OK
            return work.result() or Exit.OK
    finally:
        await client.close()


async def _first_of(*waits: asyncio.Future[Any]) -> None:
    """Return once one of ``waits`` is done (the others go on)."""
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)


@contextlib.contextmanager
def _signals(handler: Callable[[int], None]) -> Iterator[None]:
    """``handler(signum)`` on SIGINT and SIGTERM inside the block; the
    handlers before it (asyncio.run's own, which cancels the main task
    cleanly on Ctrl-C) come back after it."""
    loop = asyncio.get_running_loop()
    signums = (signal.SIGINT, signal.SIGTERM)
    before = {signum: signal.getsignal(signum) for signum in signums}
    for signum in signums:
        loop.add_signal_handler(signum, handler, signum)
    try:
        yield
    finally:
        for signum in signums:
            loop.remove_signal_handler(signum)
            signal.signal(signum, before[signum])


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Future[int]]:
    """A future that SIGINT or SIGTERM completes with the signal's number."""
    stopped: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def stop(signum: int) -> None:
        if not stopped.done():
            stopped.set_result(signum)

    with _signals(stop):
        try:
            yield stopped
        finally:
            if not stopped.done():
                stopped.cancel()


# ---- documents and labels ---------------------------------------------------------------


def _stat_doc(stat: Stat | None) -> dict[str, Any] | None:
    return None if stat is None else dataclasses.asdict(stat)


def _data_doc(data: bytes) -> dict[str, str]:
    from httpcoord.client.models import encode_data

    text, encoding = encode_data(data)
    return {"data": text, "encoding": encoding}


def _node_doc(node: Node) -> dict[str, Any]:
    doc: dict[str, Any] = {"path": node.path, **_data_doc(node.data)}
    doc["stat"] = _stat_doc(node.stat)
    if node.children is not None:
        doc["children"] = node.children
    doc["zxid"] = node.zxid
    return doc


def _shown_data(data: bytes, chars_max: int = 60) -> str:
    """Data for a human: the text (escaped) when it is UTF-8, else its size."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return f"<{len(data)} bytes>"
    shown = repr(text[:chars_max])
    return shown + ("..." if len(text) > chars_max else "")


def _when(epoch_ms: int) -> str:
    if epoch_ms == 0:
        return "-"
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC).astimezone()
    return moment.isoformat(sep=" ", timespec="milliseconds")


# ---- data in --------------------------------------------------------------------------------


def read_value(value: str | None, file: Path | None, *, required: bool) -> bytes:
    """The data of a set or create: the argument (``-`` is stdin), or
    ``--file`` (``-`` is stdin too), as bytes."""
    if value is not None and file is not None:
        raise click.UsageError("give the data as VALUE or --file, not both")
    if value == "-" or str(file) == "-":
        return _read_bounded(sys.stdin.buffer, "stdin")
    if file is not None:
        with file.open("rb") as f:
            return _read_bounded(f, str(file))
    if value is not None:
        # The argument's own bytes, as the shell passed them (argv may hold
        # bytes that are not UTF-8: fsencode gives them back unchanged).
        return os.fsencode(value)
    if required:
        raise click.UsageError("give the data: VALUE, - for stdin, or --file FILE")
    return b""


def _read_bounded(f: IO[bytes], name: str) -> bytes:
    data = f.read(INPUT_BYTES_MAX + 1)
    if len(data) > INPUT_BYTES_MAX:
        raise PayloadTooLarge(f"{name}: more than {INPUT_BYTES_MAX} bytes", limit=INPUT_BYTES_MAX)
    return data


VALUE_ARG = click.argument("value", required=False)
FILE_OPT = click.option(
    "--file",
    "-f",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="read the data from FILE (- for stdin) instead of VALUE",
)


# ---- walking a subtree ---------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Walk:
    nodes: dict[str, Node]  # every node read, by path
    truncated: bool  # the walk stopped at its node limit


async def fetch_many(
    client: Client,
    paths: list[str],
    *,
    children: bool,
    advance: Callable[[int], None] = lambda n: None,
) -> dict[str, Node]:
    """Read ``paths`` (WALK_REQUESTS_MAX at a time), in their order; a
    node deleted meanwhile is left out."""
    found: dict[str, Node] = {}
    for start in range(0, len(paths), WALK_REQUESTS_MAX):
        chunk = paths[start : start + WALK_REQUESTS_MAX]
        reads = await asyncio.gather(*(_get_or_none(client, p, children) for p in chunk))
        for path, node in zip(chunk, reads, strict=True):
            if node is not None:
                found[path] = node
        advance(len(chunk))
    return found


async def walk(
    client: Client, root: str, out: Output, *, depth_max: int | None, nodes_max: int
) -> Walk:
    """Read the subtree at ``root`` level by level, at most ``nodes_max``
    nodes and ``depth_max`` levels below it. NoNode if ``root`` is gone."""
    from httpcoord.client.models import child_path

    first = await client.get(root, children=True)
    nodes = {root: first}
    level = [root]
    depth = 0
    truncated = False
    with _progress(out, None) as advance:
        while level and (depth_max is None or depth < depth_max):
            below = [child_path(p, c) for p in level for c in (nodes[p].children or [])]
            room = nodes_max - len(nodes)
            if len(below) > room:
                below, truncated = below[:room], True
            read = await fetch_many(client, below, children=True, advance=advance)
            nodes.update(read)
            level = list(read)
            depth += 1
            if truncated:
                break
    return Walk(nodes, truncated)


async def _get_or_none(client: Client, path: str, children: bool) -> Node | None:
    try:
        return await client.get(path, children=children)
    except NoNode:
        return None


@contextlib.contextmanager
def _progress(out: Output, total: int | None) -> Iterator[Callable[[int], None]]:
    """A transient progress bar on stderr for walks of many nodes, shown
    only on a terminal; yields ``advance(n)``."""
    few = total is not None and total < WALK_PROGRESS_NODES_MIN
    if out.as_json or few or not out.err.is_terminal:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress: Progress = Progress(
        TextColumn("reading nodes"),
        BarColumn(),
        MofNCompleteColumn(),
        console=out.err,
        transient=True,
    )
    task = progress.add_task("walk", total=total)
    done = 0
    started = False

    def advance(n: int) -> None:
        nonlocal done, started
        done += n
        if not started and done >= WALK_PROGRESS_NODES_MIN:
            progress.start()  # short walks never flash a bar
            started = True
        progress.update(task, completed=done)

    try:
        yield advance
    finally:
        if started:
            progress.stop()


# ---- the commands -----------------------------------------------------------------------


@click.command()
@PATH_ARG
@click.option(
    "--linearizable",
    is_flag=True,
    help="read through the leader (ReadIndex): sees every write committed before it",
)
@common
def get(path: str, linearizable: bool) -> None:
    """Print a node's data.

    The raw bytes (binary-safe; a newline is added only on a terminal), or
    with --json the data (text or base64, as `encoding` says) and stat.

    \b
      httpcoord get /app/config > config.bin
    """

    async def body(client: Client, out: Output) -> None:
        node = await client.get(path, consistency="linearizable" if linearizable else None)
        if out.as_json:
            out.json(_node_doc(node))
            return
        sys.stdout.buffer.write(node.data)
        if sys.stdout.isatty() and not node.data.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()

    run(body)


@click.command()
@PATH_ARG
@common
def stat(path: str) -> None:
    """Show a node's stat (ZooKeeper's fields).

    \b
      httpcoord stat /app/config
    """

    async def body(client: Client, out: Output) -> None:
        node = await client.get(path)
        if out.as_json:
            out.json({"path": node.path, "stat": _stat_doc(node.stat), "zxid": node.zxid})
            return
        out.show(_stat_table(node))

    run(body)


def _stat_table(node: Node) -> RenderableType:
    from rich.table import Table

    table = Table(show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("path", node.path)
    for field, value in dataclasses.asdict(node.stat).items():
        shown = str(value)
        if field in ("ctime", "mtime"):
            shown = f"{value} ({_when(value)})"
        elif field == "ephemeral_owner" and not value:
            shown = "-"
        table.add_row(field, shown)
    return table


@click.command("set")
@PATH_ARG
@VALUE_ARG
@FILE_OPT
@click.option(
    "--version",
    type=click.IntRange(-1),
    help="set only if the node's version is this (compare-and-set); else BadVersion",
)
@common
def set_(path: str, value: str | None, file: Path | None, version: int | None) -> None:
    """Set a node's data.

    An upsert, or with --version a compare-and-set. VALUE is the data; - or
    --file reads it from stdin or a file, bytes as they are.

    \b
      httpcoord set /app/config '{"debug": true}'
      httpcoord set /app/blob --file blob.bin --version 3
    """
    data = read_value(value, file, required=True)

    async def body(client: Client, out: Output) -> None:
        result = await client.set(path, data, version=None if version == -1 else version)
        if out.as_json:
            out.json({"path": result.path, "zxid": result.zxid, "stat": _stat_doc(result.stat)})
        else:
            shown = f" version {result.stat.version}," if result.stat else ""
            out.line(f"{result.path}:{shown} zxid {result.zxid}")

    run(body)


@click.command()
@PATH_ARG
@VALUE_ARG
@FILE_OPT
@click.option(
    "--ephemeral",
    "-e",
    is_flag=True,
    help="a node of a session: without --session the command opens one and "
    "holds it until Ctrl-C or SIGTERM; the node goes when the command ends",
)
@click.option(
    "--session",
    "session_id",
    help="the session an --ephemeral node belongs to (see `session open`); "
    "the node lives as long as that session",
)
@click.option(
    "--session-ttl-ms",
    type=click.IntRange(1),
    default=DEFAULT_SESSION_TTL_MS,
    help="ttl of the session --ephemeral opens",
)
@click.option("--sequential", "-s", is_flag=True, help="append a 10-digit counter to the name")
@click.option("--parents", "-p", is_flag=True, help="create missing parents (persistent, empty)")
@click.option("--container", is_flag=True, help="removed by the server once its last child goes")
@click.option(
    "--ttl-ms", type=click.IntRange(1), help="removed once unchanged and childless this long"
)
@common
def create(
    path: str,
    value: str | None,
    file: Path | None,
    ephemeral: bool,
    session_id: str | None,
    session_ttl_ms: int,
    sequential: bool,
    parents: bool,
    container: bool,
    ttl_ms: int | None,
) -> None:
    """Create a node and print its path.

    The path printed is the name a --sequential create got. VALUE is the
    data; - or --file reads it from stdin or a file.

    An --ephemeral node without --session lives only as long as this
    command: it waits after printing the path, and the node is deleted
    when the command ends (Ctrl-C, SIGTERM), like a service registering
    itself for as long as it runs.

    \b
      httpcoord create /app/config v1 --parents
      httpcoord create /queue/job- --sequential --file job.json
      httpcoord create --ephemeral /services/web/host1 10.0.0.1:80
    """
    if session_id is not None and not ephemeral:
        raise click.UsageError("--session is for --ephemeral nodes")
    data = read_value(value, file, required=False)
    hold = ephemeral and session_id is None

    def report(out: Output, result: WriteResult, session: str | None) -> None:
        if out.as_json:
            doc = {"path": result.path, "zxid": result.zxid, "stat": _stat_doc(result.stat)}
            if session is not None:
                doc["session"] = session
            out.json(doc)
        else:
            out.line(result.path)

    async def create_once(client: Client, session: str | None) -> WriteResult:
        return await client.create(
            path,
            data,
            sequential=sequential,
            parents=parents,
            ephemeral=ephemeral,
            container=container,
            ttl_ms=ttl_ms,
            session=session,
        )

    async def body(client: Client, out: Output) -> None:
        if not hold:
            report(out, await create_once(client, session_id), session_id)
            return
        async with client.session(session_ttl_ms) as session:
            result = await create_once(client, session.id)
            report(out, result, session.id)
            out.note(f"holding {result.path} in session {session.id}; Ctrl-C deletes it")
            await _until_lost(session)
            raise lost(f"session {session.id} was lost: {result.path} is gone")

    run(body, ends_on_signal=hold)


async def _until_lost(session: Session) -> None:
    from httpcoord.client import SessionState

    await session.wait_for(SessionState.LOST, SessionState.CLOSED)


@click.command()
@PATH_ARG
@click.option("--long", "-l", "long_", is_flag=True, help="a table with each child's stat")
@common
def ls(path: str, long_: bool) -> None:
    """List a node's children.

    Sorted, one per line, or a table of their stats with -l.

    \b
      httpcoord ls /services/web -l
    """

    async def body(client: Client, out: Output) -> None:
        from httpcoord.client.models import child_path

        node = await client.get(path, children=True)
        names = node.children or []
        if not long_:
            if out.as_json:
                out.json({"path": node.path, "children": names, "zxid": node.zxid})
            else:
                for name in names:
                    out.line(name)
            return
        paths = [child_path(path, n) for n in names]
        with _progress(out, len(paths)) as advance:
            read = await fetch_many(client, paths, children=False, advance=advance)
        rows = [(n, read[p]) for n, p in zip(names, paths, strict=True) if p in read]
        if out.as_json:
            children = [{"name": n, "stat": _stat_doc(c.stat)} for n, c in rows]
            out.json({"path": node.path, "children": children, "zxid": node.zxid})
        else:
            out.show(_ls_table(rows))

    run(body)


def _ls_table(rows: list[tuple[str, Node]]) -> RenderableType:
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    table.add_column("name")
    for column in ("version", "bytes", "children"):
        table.add_column(column, justify="right")
    table.add_column("ephemeral owner")
    table.add_column("modified")
    for name, child in rows:
        s = child.stat
        table.add_row(
            name,
            str(s.version),
            str(s.data_length),
            str(s.num_children),
            s.ephemeral_owner or "-",
            _when(s.mtime),
        )
    return table


@click.command()
@click.argument("path", default="/", callback=_znode_path)
@click.option("--depth", type=click.IntRange(0), help="levels shown below PATH (default: all)")
@click.option(
    "--limit",
    "nodes_max",
    type=click.IntRange(1),
    default=10_000,
    help="most nodes read; a bigger subtree is cut (and says so)",
)
@common
def tree(path: str, depth: int | None, nodes_max: int) -> None:
    """Show the subtree at PATH (default /).

    \b
      httpcoord tree /app --depth 2
    """

    async def body(client: Client, out: Output) -> None:
        found = await walk(client, path, out, depth_max=depth, nodes_max=nodes_max)
        if out.as_json:
            out.json({**_tree_doc(path, found.nodes), "truncated": found.truncated})
            return
        out.show(_tree_view(path, found.nodes))
        if found.truncated:
            out.note(f"cut at {nodes_max} nodes (--limit)")

    run(body)


def _tree_doc(path: str, nodes: dict[str, Node]) -> dict[str, Any]:
    from httpcoord.client.models import child_path

    node = nodes[path]
    children = [child_path(path, c) for c in (node.children or [])]
    return {
        "path": path,
        "stat": _stat_doc(node.stat),
        "children": [_tree_doc(c, nodes) for c in children if c in nodes],
    }


def _tree_view(root: str, nodes: dict[str, Node]) -> RenderableType:
    from rich.tree import Tree

    from httpcoord.client.models import child_path

    def label(path: str) -> Text:
        from rich.text import Text

        node = nodes[path]
        name = path if path == root else path.rsplit("/", 1)[1]
        text = Text(name, style="bold" if node.stat.num_children else "")
        details = [f"{node.stat.data_length} B"] if node.stat.data_length else []
        if node.stat.ephemeral:
            details.append("ephemeral")
        if details:
            text.append(f"  ({', '.join(details)})", style="dim")
        return text

    view = Tree(label(root))
    pending: list[tuple[str, Tree]] = [(root, view)]
    while pending:
        path, branch = pending.pop()
        for name in nodes[path].children or []:
            child = child_path(path, name)
            if child in nodes:
                pending.append((child, branch.add(label(child))))
    return view


@click.command()
@PATH_ARG
@click.option(
    "--version",
    type=click.IntRange(-1),
    help="delete only if the node's version is this; else BadVersion",
)
@click.option(
    "--recursive",
    "-r",
    is_flag=True,
    help="the node and everything below it, in one txn",
)
@common
def rm(path: str, version: int | None, recursive: bool) -> None:
    """Delete a node.

    NotEmpty if it has children, unless --recursive.

    \b
      httpcoord rm /app/old --recursive
    """

    async def body(client: Client, out: Output) -> None:
        result = await client.delete(path, None if version == -1 else version, recursive=recursive)
        if out.as_json:
            out.json({"path": result.path, "zxid": result.zxid})
        else:
            out.line(f"deleted {result.path}, zxid {result.zxid}")

    run(body)


@click.command()
@PATH_ARG
@click.option("--recursive", "-r", is_flag=True, help="events of the whole subtree")
@click.option(
    "--since",
    type=click.IntRange(0),
    help="replay the events after this zxid first (from the node's kept history)",
)
@click.option("--data", is_flag=True, help="include the data in created and data_changed events")
@click.option("--count", type=click.IntRange(1), help="exit after this many events")
@common
def watch(path: str, recursive: bool, since: int | None, data: bool, count: int | None) -> None:
    """Print the events at PATH as they happen.

    Events at PATH (or below it with --recursive), until Ctrl-C or --count
    events; reconnects to any node without missing or repeating one. A resume older than the node's history prints a
    `resync` with the state read afresh.

    \b
      httpcoord watch /app/config --data
      httpcoord watch /app --recursive --since 1200 --json
    """

    async def body(client: Client, out: Output) -> None:
        from httpcoord.client import Event

        seen = 0
        stream = client.watch(path, recursive=recursive, since=since, data=data)
        try:
            async for item in stream:
                if isinstance(item, Event):
                    _print_event(out, item)
                else:
                    _print_resync(out, item)
                seen += 1
                if count is not None and seen >= count:
                    return
        finally:
            await stream.aclose()

    run(body, ends_on_signal=True)


_EVENT_STYLE = {
    "created": "green",
    "deleted": "red",
    "data_changed": "yellow",
    "children_changed": "cyan",
}


def _print_event(out: Output, event: Event) -> None:
    if out.as_json:
        doc: dict[str, Any] = {
            "type": event.type,
            "path": event.path,
            "zxid": event.zxid,
            "stat": _stat_doc(event.stat),
        }
        if event.data is not None:
            doc.update(_data_doc(event.data))
        out.json(doc)
        return
    from rich.text import Text

    line = Text(f"{event.zxid} ")
    line.append(event.type, style=_EVENT_STYLE.get(event.type, ""))
    line.append(f" {event.path}")
    if event.stat is not None:
        line.append(f" version {event.stat.version}", style="dim")
    if event.data is not None:
        line.append(f" {_shown_data(event.data)}")
    out.line(line)


def _print_resync(out: Output, resync: Resync) -> None:
    if out.as_json:
        nodes = {p: (None if n is None else _node_doc(n)) for p, n in resync.nodes.items()}
        out.json({"type": "resync", "zxid": resync.zxid, "nodes": nodes})
        return
    present = sum(1 for n in resync.nodes.values() if n is not None)
    out.line(f"{resync.zxid} resync: history compacted; {present} nodes read afresh")


# ---- lock and elect: run a command while holding a grant ------------------------------------


GRACE_OPT = click.option(
    "--grace-ms",
    type=click.IntRange(0),
    default=DEFAULT_GRACE_MS,
    help="when the grant is lost: SIGTERM to CMD, then SIGKILL after this long",
)
TIMEOUT_OPT = click.option(
    "--timeout-ms",
    type=click.IntRange(0),
    help="give up waiting after this long (exit 8); default: wait for ever",
)
SESSION_TTL_OPT = click.option(
    "--session-ttl-ms",
    type=click.IntRange(1),
    default=DEFAULT_SESSION_TTL_MS,
    help="ttl of the session holding the grant: how soon others take over after a crash",
)


@click.command()
@PATH_ARG
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD...")
@TIMEOUT_OPT
@SESSION_TTL_OPT
@GRACE_OPT
@common
def lock(
    path: str,
    command: tuple[str, ...],
    timeout_ms: int | None,
    session_ttl_ms: int,
    grace_ms: int,
) -> None:
    """Run CMD while holding a lock.

    Waits for the lock PATH, runs CMD, then releases the lock and exits
    with CMD's status. CMD gets the fencing token in HTTPCOORD_LOCK_TOKEN (it
    grows with every grant: pass it to what CMD changes) and the lock's
    node in HTTPCOORD_LOCK_NODE.

    If the lock is lost while CMD runs (the session suspended, expired or
    closed, the node deleted), CMD gets SIGTERM, then SIGKILL after
    --grace-ms, and the command exits 7. SIGTERM sent here is passed on to
    CMD; Ctrl-C reaches CMD from the terminal itself.

    \b
      httpcoord lock /locks/backup -- ./backup.sh --full
    """

    async def body(client: Client, out: Output) -> int:
        from httpcoord.client.recipes.lock import Lock

        async with _session_for(client, session_ttl_ms) as session:
            holder = Lock(client, path, session)
            grant = await _acquire(holder.acquire, timeout_ms, f"the lock {path}")
            try:
                env = {LOCK_TOKEN_ENV: str(grant.token), LOCK_NODE_ENV: grant.node}
                out.note(f"holding {path} (token {grant.token})")
                return await run_while_held(
                    client, grant, command, env, grace_ms, f"the lock {path}"
                )
            finally:
                with contextlib.suppress(CoordError):
                    await holder.release()

    run(body)


@click.command()
@PATH_ARG
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD...]")
@click.option(
    "--id",
    "identifier",
    help="this candidate's name, shown to others (default: HOST-PID)",
)
@TIMEOUT_OPT
@SESSION_TTL_OPT
@GRACE_OPT
@common
def elect(
    path: str,
    command: tuple[str, ...],
    identifier: str | None,
    timeout_ms: int | None,
    session_ttl_ms: int,
    grace_ms: int,
) -> None:
    """Run CMD while leader; or show the leader.

    Campaigns for leadership at PATH, then runs CMD while leader, and
    exits with CMD's status (and resigns). CMD gets the fencing token in
    HTTPCOORD_LEADER_TOKEN and the --id in HTTPCOORD_LEADER_ID. If the
    leadership is lost while CMD runs, CMD gets SIGTERM, then SIGKILL after
    --grace-ms, and the command exits 7.

    Without CMD: show the leader and the candidates waiting behind it.

    \b
      httpcoord elect /election/scheduler --id "$(hostname)" -- ./scheduler
      httpcoord elect /election/scheduler
    """

    async def show(client: Client, out: Output) -> None:
        from httpcoord.client.recipes.election import contenders

        names = [c.decode(errors="replace") for c in await contenders(client, path)]
        if out.as_json:
            out.json({"path": path, "leader": names[0] if names else None, "candidates": names})
        elif not names:
            out.line("no leader: nobody campaigns")
        else:
            out.line(f"leader: {names[0]}")
            for name in names[1:]:
                out.line(f"waiting: {name}")

    async def campaign(client: Client, out: Output) -> int:
        from httpcoord.client.recipes.election import LeaderElection

        name = identifier or f"{socket.gethostname()}-{os.getpid()}"
        async with _session_for(client, session_ttl_ms) as session:
            election = LeaderElection(client, path, session, name.encode())
            grant = await _acquire(election.campaign, timeout_ms, f"leadership of {path}")
            try:
                env = {LEADER_TOKEN_ENV: str(grant.token), LEADER_ID_ENV: name}
                out.note(f"leading {path} as {name} (token {grant.token})")
                return await run_while_held(
                    client, grant, command, env, grace_ms, f"leadership of {path}"
                )
            finally:
                with contextlib.suppress(CoordError):
                    await election.resign()

    if not command:
        if identifier is not None:
            raise click.UsageError("--id needs a CMD to run while leader")
        run(show)
    run(campaign)


@contextlib.asynccontextmanager
async def _session_for(client: Client, ttl_ms: int) -> AsyncIterator[Session]:
    """A kept-alive session for a grant. Closing it at the end is best
    effort: the grant's outcome (CMD's status, or the loss) is what the
    command reports, and a session not closed expires by itself."""
    session = await client.open_session(ttl_ms)
    try:
        yield session
    finally:
        with contextlib.suppress(CoordError):
            await session.close()


async def _acquire(
    take: Callable[[float | None], Awaitable[Grant]], timeout_ms: int | None, what: str
) -> Grant:
    """Wait for the grant; SIGINT or SIGTERM meanwhile gives the place up."""
    with _stop_on_signals() as stopped:
        taking = asyncio.ensure_future(take(None if timeout_ms is None else timeout_ms / 1000))
        await _first_of(taking, stopped)
        if not taking.done():
            taking.cancel()  # the recipe deletes its contender node
            with contextlib.suppress(asyncio.CancelledError):
                await taking
            raise Stopped(stopped.result())
    try:
        return taking.result()
    except TimeoutError:
        raise CliError(
            "Timeout", f"{what} not taken within {timeout_ms} ms", Exit.TIMEOUT
        ) from None


async def run_while_held(
    client: Client,
    grant: Grant,
    command: tuple[str, ...],
    env: dict[str, str],
    grace_ms: int,
    what: str,
) -> int:
    """Run ``command`` until it exits (its status) or the grant is lost
    (``Lost``, the command terminated first)."""
    try:
        proc = await asyncio.create_subprocess_exec(*command, env={**os.environ, **env})
    except FileNotFoundError:
        detail = f"{command[0]}: command not found"
        raise CliError("CannotRun", detail, Exit.COMMAND_NOT_FOUND) from None
    except PermissionError as exc:
        detail = f"{command[0]}: {exc.strerror}"
        raise CliError("CannotRun", detail, Exit.CANNOT_EXECUTE) from None

    def pass_on(signum: int) -> None:
        # SIGTERM (a supervisor stopping us) goes on to CMD; Ctrl-C from
        # the terminal reached CMD already (same process group). Either
        # way, CMD ends first, then the grant is released.
        if signum == signal.SIGTERM and proc.returncode is None:
            proc.send_signal(signum)

    with _signals(pass_on):
        exited = asyncio.ensure_future(proc.wait())
        session_lost = asyncio.ensure_future(grant.lost.wait())
        gone = asyncio.ensure_future(_until_deleted(client, grant.node, grant.token))
        waits = (exited, session_lost, gone)
        try:
            await _first_of(*waits)
            if not exited.done():
                await _terminate(proc, grace_ms)
                raise lost(
                    f"{what} was lost while CMD ran ({_why_lost(session_lost, gone, grant)}):"
                    " CMD was terminated"
                )
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
    status = proc.returncode
    assert status is not None
    return status if status >= 0 else 128 - status  # killed by signal N: 128 + N


def _why_lost(session_lost: asyncio.Future[Any], gone: asyncio.Future[None], grant: Grant) -> str:
    if session_lost.done():
        return "the session was suspended or lost"
    if gone.exception() is not None:
        # The deletion watch failed: the grant can no longer be vouched for.
        return f"its node could not be watched: {gone.exception()}"
    return f"its node {grant.node} was deleted"


async def _terminate(proc: asyncio.subprocess.Process, grace_ms: int) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace_ms / 1000)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def _until_deleted(client: Client, node: str, created_zxid: int) -> None:
    """Return once ``node`` is deleted. Watching from its creation's zxid
    replays a delete that came before the watch opened."""
    from httpcoord.client import Event

    stream = client.watch(node, since=created_zxid)
    try:
        async for item in stream:
            if isinstance(item, Event):
                if item.type == "deleted":
                    return
            elif item.nodes.get(node) is None:
                return
    finally:
        await stream.aclose()


# ---- sessions -----------------------------------------------------------------------------


@click.group()
def session() -> None:
    """Open, list, inspect and close sessions."""


@session.command("open")
@click.option(
    "--ttl-ms",
    type=click.IntRange(1),
    default=DEFAULT_SESSION_TTL_MS,
    help="asked-for ttl (the server clamps it to its range)",
)
@click.option(
    "--keepalive",
    is_flag=True,
    help="keep the session alive until Ctrl-C or SIGTERM, then close it",
)
@common
def session_open(ttl_ms: int, keepalive: bool) -> None:
    """Open a session and print its id.

    Without --keepalive it lives
    ttl_ms unless something heartbeats it (use it with `create --ephemeral
    --session ID`, end it with `session close ID`).

    \b
      SESSION=$(httpcoord session open --ttl-ms 30000)
    """

    def report(out: Output, session_id: str, granted_ms: int) -> None:
        if out.as_json:
            out.json({"id": session_id, "ttl_ms": granted_ms})
        else:
            out.line(session_id)

    async def body(client: Client, out: Output) -> None:
        if not keepalive:
            report(out, *await client.open_session_id(ttl_ms))
            return
        async with client.session(ttl_ms) as kept:
            report(out, kept.id, kept.ttl_ms)
            out.note("kept alive; Ctrl-C closes it")
            await _until_lost(kept)
            raise lost(f"session {kept.id} was lost")

    run(body, ends_on_signal=keepalive)


@session.command("ls")
@common
def session_ls() -> None:
    """List the open sessions.

    \b
      httpcoord session ls
    """

    async def body(client: Client, out: Output) -> None:
        sessions = await client.sessions()
        if out.as_json:
            out.json({"sessions": sessions})
            return
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        table.add_column("id")
        table.add_column("ttl_ms", justify="right")
        table.add_column("ephemerals", justify="right")
        for s in sessions:
            table.add_row(s["id"], str(s["ttl_ms"]), str(s["ephemeral_count"]))
        out.show(table)

    run(body)


@session.command("info")
@click.argument("session_id")
@common
def session_info(session_id: str) -> None:
    """Show a session.

    Its ttl, when it expires (known on the leader) and its ephemeral nodes.

    \b
      httpcoord session info 3f2a...
    """

    async def body(client: Client, out: Output) -> None:
        info = await client.session_info(session_id)
        if out.as_json:
            out.json(dataclasses.asdict(info))
            return
        from rich.table import Table

        table = Table(show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        table.add_row("id", info.id)
        table.add_row("ttl_ms", str(info.ttl_ms))
        expires = "-" if info.expires_in_ms is None else str(info.expires_in_ms)
        table.add_row("expires_in_ms", expires)
        table.add_row("ephemerals", "\n".join(info.ephemerals) or "-")
        out.show(table)

    run(body)


@session.command("close")
@click.argument("session_id")
@common
def session_close(session_id: str) -> None:
    """Close a session.

    Its ephemeral nodes are deleted with it (exit 3 if no such session is
    open).

    \b
      httpcoord session close "$SESSION"
    """

    async def body(client: Client, out: Output) -> None:
        # The client's close_session forgives an unknown id; here a typo
        # should say so.
        answer = await client.request("DELETE", f"/v1/sessions/{quote(session_id, safe='')}")
        deleted: list[str] = answer.json()["deleted"]
        if out.as_json:
            out.json({"id": session_id, "deleted": deleted})
            return
        out.line(f"closed {session_id}")
        for path in deleted:
            out.line(f"deleted {path}")

    run(body)


# ---- the cluster ------------------------------------------------------------------------------


@click.command()
@common
def cluster() -> None:
    """Show the members and how far each has got.

    Role, voter or learner, reachable, term, commit and applied index, zxid
    and tree digest, as the answering node sees them. Members at one zxid must show one digest: a difference is
    reported on stderr and the command exits 1.

    \b
      httpcoord cluster --endpoints 10.0.0.1:8181,10.0.0.2:8181
    """

    async def body(client: Client, out: Output) -> int:
        view = await client.cluster()
        diverged = _diverged(view["members"])
        if out.as_json:
            out.json(view)
        else:
            out.line(
                f"leader {view['leader'] or 'none'}, term {view['term']}"
                f" (as node {view['id']} sees it, at zxid {view['zxid']})"
            )
            out.show(_cluster_table(view))
        for zxid in diverged:
            out.error("Diverged", f"members at zxid {zxid} show different digests")
        return Exit.ERROR if diverged else Exit.OK

    run(body)


def _diverged(members: list[dict[str, Any]]) -> list[int]:
    digests: dict[int, set[str]] = {}
    for m in members:
        if m.get("zxid") is not None and m.get("digest"):
            digests.setdefault(m["zxid"], set()).add(m["digest"])
    return sorted(z for z, seen in digests.items() if len(seen) > 1)


def _cluster_table(view: dict[str, Any]) -> RenderableType:
    from rich.table import Table

    table = Table()
    for column in (
        "id",
        "role",
        "kind",
        "client url",
        "term",
        "commit",
        "applied",
        "zxid",
        "digest",
    ):
        numeric = column in ("term", "commit", "applied", "zxid")
        table.add_column(column, justify="right" if numeric else "left")
    for m in view["members"]:

        def cell(key: str, m: dict[str, Any] = m) -> str:
            value = m.get(key)
            return "-" if value is None or value == "" else str(value)

        role = cell("role") if m["reachable"] else "unreachable"
        style = "bold green" if m["id"] == view["leader"] else ("red" if not m["reachable"] else "")
        table.add_row(
            str(m["id"]),
            role,
            "voter" if m["voter"] else "learner",
            cell("client_url"),
            cell("term"),
            cell("commit_index"),
            cell("applied_index"),
            cell("zxid"),
            cell("digest")[:DIGEST_SHOWN_CHARS],
            style=style,
        )
    return table


COMMANDS: tuple[click.Command, ...] = (
    get,
    set_,
    create,
    ls,
    tree,
    rm,
    stat,
    watch,
    lock,
    elect,
    session,
    cluster,
)


def register(group: click.Group) -> None:
    """Add the client commands to the ``httpcoord`` group."""
    for command in COMMANDS:
        group.add_command(command)
