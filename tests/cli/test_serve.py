"""The `serve` command's flags and a real `scratchlm serve` process."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from scratchlm.cli.serve import add_serve, check_arguments, command_serve
from scratchlm.errors import ScratchLMError

# Runs the command as `scratchlm serve` does: python -m scratchlm serve ...
LAUNCH = "import sys; from scratchlm.cli import main; sys.exit(main(['serve', *sys.argv[1:]]))"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    args = parse("--checkpoint", "ckpt")
    assert (args.host, args.port, args.max_batch, args.max_queue) == ("127.0.0.1", 8000, 8, 64)
    assert args.api_key is None and args.cors_origin == [] and args.max_tokens_limit is None
    args = parse("--checkpoint", "c", "--cors-origin", "http://a", "--cors-origin", "http://b")
    assert args.cors_origin == ["http://a", "http://b"]
    assert (args.header_timeout, args.body_timeout, args.keep_alive_timeout) == (10.0, 30.0, 5)
    assert args.max_connections == 256 and args.allowed_host is None
    assert args.allow_public_without_key is False
    args = parse("--checkpoint", "c", "--allowed-host", "a.example", "--allowed-host", "*")
    assert args.allowed_host == ["a.example", "*"]


@pytest.mark.parametrize(
    "flags",
    [
        ("--max-batch", "0"),
        ("--max-queue", "-1"),
        ("--max-tokens-limit", "0"),
        ("--header-timeout", "0"),
        ("--body-timeout", "nan"),
        ("--body-timeout", "inf"),
        ("--keep-alive-timeout", "0"),
        ("--max-connections", "0"),
        ("--allowed-host", " "),
    ],
)
def test_bad_flags_are_user_errors(flags: tuple[str, str]) -> None:
    with pytest.raises(ScratchLMError, match=flags[0]):
        command_serve(parse("--checkpoint", "ckpt", *flags))


@pytest.fixture
def no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCRATCHLM_API_KEY", raising=False)


@pytest.mark.usefixtures("no_key_in_environment")
@pytest.mark.parametrize("key", ["", "   ", "\t"])
def test_empty_api_key_is_an_error_not_no_auth(key: str) -> None:
    with pytest.raises(ScratchLMError, match="--api-key is empty"):
        check_arguments(parse("--checkpoint", "ckpt", "--api-key", key))


def test_empty_api_key_in_environment_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRATCHLM_API_KEY", " ")
    with pytest.raises(ScratchLMError, match="SCRATCHLM_API_KEY is empty"):
        check_arguments(parse("--checkpoint", "ckpt"))
    monkeypatch.setenv("SCRATCHLM_API_KEY", " from-env ")
    assert check_arguments(parse("--checkpoint", "ckpt")) == "from-env"
    # The flag wins over the environment.
    assert check_arguments(parse("--checkpoint", "ckpt", "--api-key", "flag")) == "flag"


@pytest.mark.usefixtures("no_key_in_environment")
def test_api_key_must_be_printable_ascii() -> None:
    for key in ("clé", "a\x00b"):
        with pytest.raises(ScratchLMError, match="printable ASCII"):
            check_arguments(parse("--checkpoint", "ckpt", "--api-key", key))


@pytest.mark.usefixtures("no_key_in_environment")
def test_binding_beyond_loopback_needs_a_key_or_the_opt_in() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert check_arguments(parse("--checkpoint", "c", "--host", host)) is None
    for host in ("0.0.0.0", "::", "", "192.168.1.5", "myhost"):
        with pytest.raises(ScratchLMError, match="--allow-public-without-key"):
            check_arguments(parse("--checkpoint", "c", "--host", host))
        assert check_arguments(parse("--checkpoint", "c", "--host", host, "--api-key", "k")) == "k"
        opted_in = parse("--checkpoint", "c", "--host", host, "--allow-public-without-key")
        assert check_arguments(opted_in) is None


def test_empty_key_stops_the_real_command_at_start_up(server_checkpoint: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if key != "SCRATCHLM_API_KEY"}
    for flags, extra in ((["--api-key", ""], {}), ([], {"SCRATCHLM_API_KEY": ""})):
        process = subprocess.run(
            [sys.executable, "-c", LAUNCH, "--checkpoint", str(server_checkpoint), *flags],
            env={**environment, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert process.returncode == 2, process.stderr
        lines = process.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "is empty" in lines[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_process_with_key_from_environment(server_checkpoint: Path) -> None:
    port = free_port()
    environment = {**os.environ, "SCRATCHLM_API_KEY": "from-env"}
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "--checkpoint", str(server_checkpoint), "--port", str(port)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="from-env", max_retries=0)
        assert [model.id for model in client.models.list().data] == [server_checkpoint.name]
        denied = httpx.get(f"http://127.0.0.1:{port}/v1/models")
        assert denied.status_code == 401
        # A second server on the same port is one clear line and exit code 2.
        clash = subprocess.run(
            [
                sys.executable,
                "-c",
                LAUNCH,
                "--checkpoint",
                str(server_checkpoint),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert clash.returncode == 2 and "cannot listen" in clash.stderr
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_start_up_objects_are_frozen_before_serving(
    server_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve` freezes what start-up made before the first request: a full garbage collection
    would otherwise walk those ~330,000 objects while every request waits."""
    import gc

    import uvicorn

    from scratchlm.cli import main

    frozen_when_serving: list[int] = []

    def record(self: uvicorn.Server, sockets: list[socket.socket]) -> None:
        frozen_when_serving.append(gc.get_freeze_count())
        for listener in sockets:
            listener.close()

    monkeypatch.setattr(uvicorn.Server, "run", record)
    gc.unfreeze()
    try:
        assert main(["serve", "--checkpoint", str(server_checkpoint), "--port", "0"]) in (0, None)
    finally:
        gc.unfreeze()  # the rest of the test session collects as before
    assert len(frozen_when_serving) == 1 and frozen_when_serving[0] > 10_000
