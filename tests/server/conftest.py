"""A real server on a loopback port: uvicorn in a background thread over a pre-bound socket (no
port race), serving a tiny random-weight checkpoint (the tests check mechanics, not replies)."""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import uvicorn
from fastapi import FastAPI

from scratchlm.checkpoint import Checkpoint, load_checkpoint
from scratchlm.server import app as app_module
from scratchlm.server.app import ServerSettings, create_app
from scratchlm.server.protocol import uvicorn_config
from scratchlm.server.scheduler import Job, Scheduler
from scratchlm.tokenizer import Tokenizer
from tests.chat.conftest import write_checkpoint


@pytest.fixture(scope="session")
def server_checkpoint(tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer: Tokenizer) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("server") / "tiny-ckpt", bpe_tokenizer, 256)


@pytest.fixture(scope="session")
def loaded(server_checkpoint: Path) -> Checkpoint:
    return load_checkpoint(server_checkpoint)


@dataclass
class RunningServer:
    url: str  # http://127.0.0.1:PORT
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class SlowScheduler(Scheduler):
    """Sleeps after each decode step, so that rows stay in the batch long enough for a test to
    see them together (or to fill the queue)."""

    def __init__(self, *args: Any, step_delay: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step_delay = step_delay

    def _deliver(self, rows: Any, finished: set[int]) -> list[Job]:
        first = super()._deliver(rows, finished)
        time.sleep(self.step_delay)
        return first


def start_server(loaded: Checkpoint, *, step_delay: float = 0.0, **settings: Any) -> RunningServer:
    """A running server; `step_delay` seconds of sleep after each decode step hold rows."""
    settings.setdefault("model_name", "tiny")
    if step_delay:
        scheduler = functools.partial(SlowScheduler, step_delay=step_delay)
        with mock.patch.object(app_module, "Scheduler", scheduler):
            app = create_app(loaded.model, loaded.tokenizer, ServerSettings(**settings))
    else:
        app = create_app(loaded.model, loaded.tokenizer, ServerSettings(**settings))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    # The configuration `scratchlm serve` runs with (timeouts, limits, the h11 protocol).
    server = uvicorn.Server(
        uvicorn_config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    return RunningServer(f"http://127.0.0.1:{port}", app, server, thread)


StartServer = Callable[..., RunningServer]


@pytest.fixture
def make_server(loaded: Checkpoint) -> Iterator[StartServer]:
    started: list[RunningServer] = []

    def make(**settings: Any) -> RunningServer:
        running = start_server(loaded, **settings)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture(scope="module")
def server(loaded: Checkpoint) -> Iterator[RunningServer]:
    running = start_server(loaded)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def slow_server(loaded: Checkpoint) -> Iterator[RunningServer]:
    """Steps slowed down so concurrent requests surely overlap in the batch."""
    running = start_server(loaded, max_batch=8, step_delay=0.01)
    yield running
    running.stop()


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")
