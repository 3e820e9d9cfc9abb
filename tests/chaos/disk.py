"""Disks the fault suite can fill: a data dir on a small file system of its
own (``tmpfs``, or ``ext4`` on a loop-mounted image when fsync must cost what
it costs on a disk), mounted by the test as root and always unmounted,
filled by one filler file (``fill``) until the file system is full, and
freed by deleting it (``free``). A test skips where it cannot mount.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TMPFS_SIZE = "24m"
FILLER = "filler"


def _run_or_skip(argv: list[str], why: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"{why}: {done.stderr.strip()}")


@contextmanager
def _mounted(path: Path, mount_argv: list[str], why: str) -> Iterator[Path]:
    """``mount_argv`` mounts at ``path`` (the test skips if it cannot);
    always unmounted at the end (lazily if it is still busy)."""
    _run_or_skip(mount_argv, why)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


@contextmanager
def tmpfs(path: Path, size: str = TMPFS_SIZE) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at path; always unmounted at the end."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    argv = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    with _mounted(path, argv, "cannot mount a tmpfs here"):
        yield path


def _write_until_full(path: Path, mode: str, block_bytes: int, blocks_max: int) -> int:
    """Append zeros to the filler a block at a time until ENOSPC; bytes written."""
    written = 0
    with open(path / FILLER, mode, buffering=0) as f:
        for _ in range(blocks_max):
            try:
                written += f.write(b"\0" * block_bytes)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    return written


def fill(path: Path, chunk_bytes: int = 1 << 20, chunks_max: int = 4096) -> int:
    """Write a filler file until the file system is full; its size."""
    written = _write_until_full(path, "wb", chunk_bytes, chunks_max)
    # The last bytes: what a whole chunk did not fit.
    return written + _write_until_full(path, "ab", 4096, chunk_bytes // 4096 + 1)


def free(path: Path) -> None:
    """Delete the filler: the file system has room again."""
    (path / FILLER).unlink(missing_ok=True)


@contextmanager
def ext4(path: Path, size_mb: int) -> Iterator[Path]:
    """A file system of its own at ``path``: ext4 on a sparse image file
    beside it, loop-mounted, so an fsync reaches the real disk as on a real
    data dir (a tmpfs makes fsync free); always unmounted and deleted."""
    image = path.with_name(path.name + ".ext4")
    path.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    why = "cannot make a file system here"
    try:
        _run_or_skip(["mkfs.ext4", "-q", "-F", str(image)], why)
        with _mounted(path, ["mount", "-o", "loop", str(image), str(path)], why):
            yield path
    finally:
        image.unlink(missing_ok=True)


def ext4_available() -> bool:
    """Root with mkfs.ext4 and loop mounts: ``ext4`` will work."""
    return (
        os.geteuid() == 0
        and shutil.which("mkfs.ext4") is not None
        and Path("/dev/loop-control").exists()
    )
