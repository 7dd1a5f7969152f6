"""Download a URL once into the cache: resumable, checksummed, with a progress bar (urllib only).

Layout under `cache_dir/downloads/`: `<urlhash>-<name>` is the finished file, `<...>.part` the bytes
received so far (a later call resumes it with an HTTP Range request) and `<...>.json` a sidecar that
records the URL, the size and the sha256. The `.part` file is fsynced and renamed into place only when
complete, so a finished name never holds a half-written file.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock
from tqdm.auto import tqdm

from scratchlm.errors import ScratchLMError
from scratchlm.io_utils import atomic_write_json, fsync_directory

DOWNLOAD_CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60.0
_FIX_HINT = "check the URL or your network; or download it yourself and pass the local path"


def cached_download_path(url: str, cache_dir: Path) -> Path:
    """Where `download(url, cache_dir)` puts the finished file (the `.part` file sits next to it)."""
    url_hash = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    name = Path(urllib.parse.urlsplit(url).path).name or "download"
    # The name keeps the URL's suffix (.txt, .parquet, .tar.gz) because readers dispatch on it.
    safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", name)[-100:]
    return Path(cache_dir) / "downloads" / f"{url_hash}-{safe_name}"


def download(
    url: str, cache_dir: Path, *, sha256: str | None = None, progress: bool = True
) -> Path:
    """Return a local copy of `url`, downloading (or resuming) it into `cache_dir` when needed.

    The sha256 of the file is recorded in a sidecar JSON; it is verified against `sha256` when given
    and against the recorded value whenever a cached copy is reused.
    """
    if not url.startswith(("http://", "https://")):
        raise ScratchLMError(f"{url!r} is not an http(s) URL; pass an http:// or https:// address")
    target = cached_download_path(url, cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.lower() if sha256 else None
    # One download per file across processes (several training ranks, two commands at once).
    with FileLock(target.with_name(target.name + ".lock")):
        if target.is_file():
            if _cached_copy_is_valid(url, target, expected):
                return target
            target.unlink()
        digest = _fetch(url, target, progress=progress)
        if expected is not None and digest != expected:
            target.with_name(target.name + ".part").unlink(missing_ok=True)
            raise ScratchLMError(
                f"the file downloaded from {url} has sha256 {digest}, expected {expected}; "
                "the server sent different content: check the URL and the checksum"
            )
        part = target.with_name(target.name + ".part")
        os.replace(part, target)
        fsync_directory(target.parent)
        atomic_write_json(
            _sidecar_path(target),
            {
                "url": url,
                "bytes": target.stat().st_size,
                "sha256": digest,
                "downloaded": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            },
        )
    return target


def _sidecar_path(target: Path) -> Path:
    return target.with_name(target.name + ".json")


def _cached_copy_is_valid(url: str, target: Path, expected: str | None) -> bool:
    """Whether the finished file matches its sidecar (and `expected`); a mismatch means re-download."""
    try:
        record = json.loads(_sidecar_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # no sidecar: the write was interrupted between rename and sidecar
    if record.get("url") != url or record.get("bytes") != target.stat().st_size:
        return False
    digest = _sha256_of_file(target)
    if digest != record.get("sha256"):
        return False  # the cached copy was modified or corrupted on disk
    if expected is not None and digest != expected:
        raise ScratchLMError(
            f"the cached download of {url} ({target}) has sha256 {digest}, expected {expected}; "
            "check the checksum you passed, or delete the cached file to download it again"
        )
    return True


def _sha256_of_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(DOWNLOAD_CHUNK_BYTES):
            hasher.update(block)
    return hasher.hexdigest()


def _fetch(url: str, target: Path, *, progress: bool) -> str:
    """Download into `target.part`, resuming what is there; return the sha256 of the whole file."""
    part = target.with_name(target.name + ".part")
    resume_from = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "scratchlm"})
    if resume_from:
        request.add_header("Range", f"bytes={resume_from}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        if error.code == 416 and resume_from:
            # The server cannot serve the rest of our partial copy (it changed or is complete but
            # unverified): start over rather than guess.
            part.unlink()
            return _fetch(url, target, progress=progress)
        raise ScratchLMError(
            f"downloading {url} failed: HTTP {error.code} {error.reason}; {_FIX_HINT}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise ScratchLMError(f"cannot reach {url} ({reason}); {_FIX_HINT}") from None

    with response:
        status = getattr(response, "status", 200)
        hasher = hashlib.sha256()
        if resume_from and status == 206:
            mode = "ab"
            # Hash what we already have so the checksum covers the whole file.
            with open(part, "rb") as existing:
                while block := existing.read(DOWNLOAD_CHUNK_BYTES):
                    hasher.update(block)
        else:
            mode = "wb"  # the server ignored the Range header: it sends the whole file again
            resume_from = 0
        length_header = response.headers.get("Content-Length")
        total = resume_from + int(length_header) if length_header is not None else None
        received = resume_from
        with (
            open(part, mode) as handle,
            tqdm(
                total=total,
                initial=resume_from,
                unit="B",
                unit_scale=True,
                desc=f"downloading {target.name.split('-', 1)[-1]}",
                disable=None if progress else True,  # None: draw only on a terminal
            ) as bar,
        ):
            try:
                for block in _read_blocks(response):
                    handle.write(block)
                    hasher.update(block)
                    received += len(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as error:
                handle.flush()
                os.fsync(handle.fileno())
                raise ScratchLMError(
                    f"the download of {url} was interrupted after {received} bytes ({error}); "
                    "run the same command again to resume it"
                ) from None
            handle.flush()
            os.fsync(handle.fileno())
    if total is not None and received != total:
        raise ScratchLMError(
            f"the download of {url} stopped after {received} of {total} bytes; "
            "run the same command again to resume it"
        )
    return hasher.hexdigest()


def _read_blocks(response: BinaryIO) -> Iterator[bytes]:
    while True:
        block = response.read(DOWNLOAD_CHUNK_BYTES)
        if not block:
            return
        yield block
