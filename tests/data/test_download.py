"""Downloads against a loopback HTTP server: cached, resumable (HTTP Range), checksummed."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scratchlm.data.download import cached_download_path, download
from scratchlm.data.prepare import prepare_dataset
from scratchlm.data.shards import read_manifest
from scratchlm.errors import ScratchLMError
from scratchlm.tokenizer import Tokenizer
from tests.data.helpers import STORIES, documents_of, split_tokens, stories_text


@dataclass
class LoopbackServer:
    """Serves `files` (path -> bytes) with Range support; can cut the next response short."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    cut_next_response_after: int | None = None
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    state = LoopbackServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            state.requests.append((self.path, range_header))
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            start = 0
            if range_header:
                start = int(range_header.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            payload = body[start:]
            if state.cut_next_response_after is not None:
                payload = payload[: state.cut_next_response_after]
                state.cut_next_response_after = None
                self.close_connection = True
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = httpd.server_address[1]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def sidecar(path: Path) -> dict[str, object]:
    return json.loads(path.with_name(path.name + ".json").read_text())


def test_download_records_the_checksum_and_reuses_the_cached_copy(
    server: LoopbackServer, tmp_path: Path
) -> None:
    body = b"hello loopback\n" * 1000
    server.files["/data/corpus.txt"] = body
    url = server.url("/data/corpus.txt")
    path = download(url, tmp_path, progress=False)
    assert path == cached_download_path(url, tmp_path) and path.name.endswith("corpus.txt")
    assert path.read_bytes() == body
    record = sidecar(path)
    assert record["sha256"] == hashlib.sha256(body).hexdigest()
    assert record["bytes"] == len(body) and record["url"] == url
    assert download(url, tmp_path, sha256=hashlib.sha256(body).hexdigest(), progress=False) == path
    assert len(server.requests) == 1  # reused, not downloaded again
    path.write_bytes(b"corrupted")  # a damaged cached copy is detected and fetched again
    assert download(url, tmp_path, progress=False).read_bytes() == body
    assert len(server.requests) == 2


def test_a_partial_download_is_resumed_with_a_range_request(
    server: LoopbackServer, tmp_path: Path
) -> None:
    body = bytes(range(256)) * 400
    server.files["/big.txt"] = body
    url = server.url("/big.txt")
    part = cached_download_path(url, tmp_path).with_name(
        cached_download_path(url, tmp_path).name + ".part"
    )
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:30_000])
    path = download(url, tmp_path, progress=False)
    assert server.requests == [("/big.txt", "bytes=30000-")]
    assert path.read_bytes() == body
    assert sidecar(path)["sha256"] == hashlib.sha256(body).hexdigest()
    assert not part.exists()


def test_an_interrupted_download_keeps_its_part_and_resumes(
    server: LoopbackServer, tmp_path: Path
) -> None:
    body = b"0123456789" * 5000
    server.files["/cut.txt"] = body
    server.cut_next_response_after = 12_345
    url = server.url("/cut.txt")
    with pytest.raises(ScratchLMError, match="run the same command again to resume"):
        download(url, tmp_path, progress=False)
    part = cached_download_path(url, tmp_path)
    assert not part.exists()
    assert part.with_name(part.name + ".part").stat().st_size == 12_345
    assert download(url, tmp_path, progress=False).read_bytes() == body
    assert server.requests[-1] == ("/cut.txt", "bytes=12345-")


def test_a_checksum_mismatch_is_an_error_and_leaves_no_file(
    server: LoopbackServer, tmp_path: Path
) -> None:
    server.files["/x.txt"] = b"content"
    url = server.url("/x.txt")
    with pytest.raises(ScratchLMError, match="expected 000"):
        download(url, tmp_path, sha256="0" * 64, progress=False)
    assert not cached_download_path(url, tmp_path).exists()


def test_http_errors_and_unreachable_hosts_say_how_to_fix_them(
    server: LoopbackServer, tmp_path: Path
) -> None:
    with pytest.raises(
        ScratchLMError, match=r"HTTP 404.*check the URL or your network.*local path"
    ):
        download(server.url("/missing.txt"), tmp_path, progress=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(ScratchLMError, match=r"cannot reach.*check the URL or your network"):
        download(f"http://127.0.0.1:{closed_port}/data.txt", tmp_path, progress=False)


def test_prepare_from_a_url(
    server: LoopbackServer, tmp_path: Path, alphabet_tokenizer: Tokenizer
) -> None:
    server.files["/stories.txt"] = stories_text().encode()
    out = prepare_dataset(
        server.url("/stories.txt"),
        tmp_path / "out",
        alphabet_tokenizer,
        val_fraction=0.25,
        cache_dir=tmp_path / "cache",
        num_workers=0,
        progress=False,
    )
    tokens = split_tokens(out, "train") + split_tokens(out, "val")
    decoded = [
        alphabet_tokenizer.decode(doc) for doc in documents_of(tokens, alphabet_tokenizer.eos_id)
    ]
    assert decoded == STORIES
    assert read_manifest(out)["source"] == server.url("/stories.txt")
    assert len(list((tmp_path / "cache" / "downloads").glob("*.json"))) == 1
