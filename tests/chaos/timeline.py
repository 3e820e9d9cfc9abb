"""Pictures of a history around an anomaly, and the files a failing run leaves behind.

``draw_timeline`` draws one row per process and one bar per op from its invocation to
its completion: green ok, grey fail, orange hatched unknown (up to when the client gave
up, then a dotted line to the window's end, as it may take effect any time later; an op
never completed runs to the end); the ops an anomaly names are outlined in black.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt
import orjson
from matplotlib.patches import Rectangle

from tests.chaos.checkers import Anomaly, ops_window
from tests.chaos.history import History, Op, dumps_ops

COLOURS = {"ok": "#4caf50", "fail": "#9e9e9e", "unknown": "#ff9800"}
# Bounds that keep a picture readable and its drawing quick.
OPS_DRAWN_MAX = 300
LABEL_CHARS_MAX = 40
# Beyond this many ops in a picture only the outlined ones carry a label.
LABELLED_OPS_MAX = 40
LABEL_OFFSETS = (-0.18, 0.0, 0.18)
PNGS_MAX = 5
# Context drawn either side of an anomaly's own window, as a share of its length
# (a window of one instant gets MARGIN_NS_MIN).
MARGIN_SHARE = 0.5
MARGIN_NS_MIN = 1_000_000


def op_label(op: Op) -> str:
    arg = "" if op.arg is None else repr(op.arg)
    if op.outcome == "ok":
        result = repr(op.value)
    elif op.outcome == "fail":
        result = f"fail {op.error}"
    else:
        result = "?"
    text = f"{op.f}({arg}) -> {result}"
    return text if len(text) <= LABEL_CHARS_MAX else text[: LABEL_CHARS_MAX - 1] + "…"


def overlaps(op: Op, start_ns: int, end_ns: int) -> bool:
    """Whether ``op`` was in flight during the window (an open op: since its invocation)."""
    return op.invoke_ns <= end_ns and (op.complete_ns is None or op.complete_ns >= start_ns)


def draw_timeline(
    history_ops: Sequence[Op],
    window: tuple[int, int],
    path_png: Path | str,
    highlight_ids: Collection[int] = (),
    title: str = "",
) -> Path:
    """Draw the ops that overlap ``window`` (monotonic ns) into ``path_png``."""
    start_ns, end_ns = window
    if end_ns <= start_ns:
        end_ns = start_ns + 1
    highlight = set(highlight_ids)
    shown = [op for op in history_ops if op.id in highlight or overlaps(op, start_ns, end_ns)]
    # Highlighted ops first so the bound never drops them, then by time.
    shown.sort(key=lambda op: (op.id not in highlight, op.invoke_ns))
    shown = sorted(shown[:OPS_DRAWN_MAX], key=lambda op: op.invoke_ns)
    processes = sorted({op.process for op in shown}, key=lambda p: (str(type(p)), p))
    row = {p: r for r, p in enumerate(processes)}

    def ms(t_ns: int) -> float:
        return (t_ns - start_ns) / 1e6

    width_ms = ms(end_ns)
    figure, axes = plt.subplots(figsize=(14, 1.0 + 0.6 * max(1, len(processes))))
    try:
        for op in shown:
            left = max(ms(op.invoke_ns), -0.05 * width_ms)
            end_ms = width_ms * 1.05
            right = end_ms if op.complete_ns is None else min(ms(op.complete_ns), end_ms)
            if op.outcome == "unknown" and right < end_ms:
                # The client gave up at `right`; the op may still take effect later.
                axes.plot([right, end_ms], [row[op.process] - 0.33] * 2, ":", color="#e65100")
            bar = Rectangle(
                (left, row[op.process] - 0.3),
                max(right - left, width_ms * 0.002),
                0.6,
                facecolor=COLOURS[op.outcome],
                alpha=0.5 if op.outcome == "unknown" else 0.8,
                edgecolor="black" if op.id in highlight else "none",
                linewidth=2.0 if op.id in highlight else 0.0,
                hatch="//" if op.outcome == "unknown" else None,
            )
            axes.add_patch(bar)
            if op.id not in highlight and len(shown) > LABELLED_OPS_MAX:
                continue
            # Alternate label heights so labels of short neighbouring bars do not overlap.
            axes.text(
                left,
                row[op.process] + LABEL_OFFSETS[op.id % len(LABEL_OFFSETS)],
                f" {op.id}: {op_label(op)}",
                va="center",
                fontsize=7,
                clip_on=True,
                fontweight="bold" if op.id in highlight else "normal",
            )
        axes.set_xlim(-0.05 * width_ms, width_ms * 1.05)
        axes.set_ylim(-0.7, len(processes) - 0.3)
        axes.set_yticks(range(len(processes)), [str(p) for p in processes])
        axes.set_xlabel("ms from window start")
        axes.set_ylabel("process")
        axes.invert_yaxis()
        axes.set_title(title or f"{len(shown)} ops; outlined: {sorted(highlight)[:12]}")
        figure.tight_layout()
        target = Path(path_png)
        figure.savefig(target, format="png", dpi=100)
    finally:
        plt.close(figure)
    return target


def anomaly_window(anomaly: Anomaly, ops: Sequence[Op]) -> tuple[int, int] | None:
    """The anomaly's own window, else the span of its ops, widened by a margin."""
    window = anomaly.window_ns
    if window is None:
        ids = set(anomaly.op_ids)
        window = ops_window([op for op in ops if op.id in ids])
    if window is None:
        return None
    width_ns = window[1] - window[0]
    margin_ns = int(width_ns * MARGIN_SHARE) if width_ns > 0 else MARGIN_NS_MIN
    return (window[0] - margin_ns, window[1] + margin_ns)


def write_failure(
    directory: Path | str,
    history: History | Sequence[Op],
    anomalies: Sequence[Anomaly],
    pngs_max: int = PNGS_MAX,
) -> list[Path]:
    """Write history.jsonl, anomalies.json and a timeline PNG for each of the first
    ``pngs_max`` anomalies that can be placed in time; return the paths written."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    ops = history.ops() if isinstance(history, History) else list(history)
    written = [target / "history.jsonl", target / "anomalies.json"]
    written[0].write_bytes(dumps_ops(ops))
    report: list[dict[str, Any]] = [a.to_json() for a in anomalies]
    written[1].write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    drawn = 0
    for number, anomaly in enumerate(anomalies):
        if drawn >= pngs_max:
            break
        window = anomaly_window(anomaly, ops)
        if window is None:
            continue
        png = target / f"anomaly-{number:02d}-{anomaly.kind}.png"
        title = f"{anomaly.kind}: {anomaly.message}"
        written.append(draw_timeline(ops, window, png, anomaly.op_ids, title[:150]))
        drawn += 1
    return written
