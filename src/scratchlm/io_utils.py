"""Atomic file and directory writes: a crash mid-write never leaves a half-written file behind.

Every file is written to a temporary sibling, flushed and fsynced, then renamed over the target
(rename is atomic on POSIX within one filesystem); the parent directory is fsynced so the rename
itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from scratchlm.errors import ScratchLMError


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make a rename or creation inside `path` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file next to `path` for binary writing; on success it replaces `path`.

    On an exception the temporary file is removed and `path` is left exactly as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    fsync_directory(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling and rename it to `path` when the block succeeds.

    With `replace=True` an existing `path` is swapped out (old moved aside, new renamed in, old
    removed), so at every moment either the old or the new directory is complete under some name.
    Readers that find `path` missing may look for `path.old` (see `checkpoint.resolve`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield temp_dir
        for child in temp_dir.iterdir():
            if child.is_file():
                with open(child, "rb+") as handle:
                    os.fsync(handle.fileno())
        fsync_directory(temp_dir)
        if target.exists():
            if not replace:
                raise FileExistsError(f"{target} already exists")
            old = target.with_name(target.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(temp_dir, target)
            fsync_directory(target.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp_dir, target)
        fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def refuse_foreign_entries(directory: Path, is_ours: Callable[[str], bool], what: str) -> None:
    """Before `--force` replaces `directory` whole: refuse if it holds anything `what` (e.g. "a
    Hugging Face export") does not write, so a mistyped --out never deletes a user's files."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise ScratchLMError(
            f"{directory} is a file, not {what}; --force replaces only {what}: remove the file "
            "yourself or choose another --out"
        )
    foreign = sorted(child.name for child in directory.iterdir() if not is_ours(child.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise ScratchLMError(
            f"{directory} holds files that are not part of {what} ({shown}); --force replaces "
            "only a directory this command wrote: move those files away or choose another --out"
        )


def write_error(error: BaseException) -> tuple[int | None, str] | None:
    """(errno, reason) when `error` is the file system refusing a write, else None. The writers
    report it differently: Python as an OSError, safetensors as SafetensorError('... (os error
    28)'), numpy's tofile as an OSError without an errno on a short write."""
    if isinstance(error, OSError):
        if error.errno is None:
            return None, f"{error} (a short write: is the disk full?)"
        return error.errno, error.strerror or str(error)
    if type(error).__name__ == "SafetensorError":
        match = re.search(r"os error (\d+)", str(error))
        if match:
            number = int(match.group(1))
            return number, os.strerror(number)
    return None


def write_failure(target: Path, error: Exception, flag: str = "--out") -> ScratchLMError:
    """One line for a failed atomic write of `target` (so nothing is at `target`)."""
    problem = write_error(error)
    reason = problem[1] if problem is not None else str(error)
    return ScratchLMError(
        f"could not write {target}: {reason}; free space or choose another {flag} (nothing was "
        "written there)"
    )


def read_jsonl(path: Path) -> list[Any]:
    """The records of a JSON-lines file we append to (metrics.jsonl); a line cut by a crash is
    skipped, a missing file is empty."""
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
