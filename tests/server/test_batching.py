"""Continuous batching under load: concurrent streams, disconnects, a full queue."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from openai import OpenAI

from scratchlm.checkpoint import Checkpoint
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import SamplingSettings
from tests.server.conftest import RunningServer, StartServer, metric_value

GREEDY = SamplingSettings(temperature=0.0, top_k=None)


def metrics(server: RunningServer) -> str:
    return httpx.get(f"{server.url}/metrics").text


def wait_for(condition: object, seconds: float = 10.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_sixteen_concurrent_streams_share_the_batch(
    slow_server: RunningServer, loaded: Checkpoint
) -> None:
    prompts = [f"Tom {word}" for word in ("ran", "sat", "was", "and", "Lily", "the", "ball", "day")]
    prompts = prompts * 2
    engine = Engine(loaded.model)
    eos = frozenset({loaded.tokenizer.eos_id})
    expected = {
        prompt: "".join(
            engine.stream_text(
                loaded.tokenizer,
                loaded.tokenizer.encode(prompt),
                max_new_tokens=20,
                sampling=GREEDY,
                stop_ids=eos,
            )
        )
        for prompt in set(prompts)
    }
    client = OpenAI(base_url=slow_server.base_url, api_key="x", max_retries=0, timeout=60)

    def run(prompt: str) -> tuple[str, str | None, int]:
        stream = client.completions.create(
            model="tiny",
            prompt=prompt,
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, tokens = "", None, -1
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].text
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return text, finish, tokens

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(run, prompts))
    for prompt, (text, finish, tokens) in zip(prompts, results, strict=True):
        # Batched greedy decoding gives what one sequence alone gives.
        assert text == expected[prompt]
        assert finish in ("stop", "length") and 0 < tokens <= 20
    text = metrics(slow_server)
    assert metric_value(text, "scratchlm_batch_size_max") > 1
    assert metric_value(text, "scratchlm_time_to_first_token_seconds_count") >= 16


def test_disconnect_frees_the_row(slow_server: RunningServer) -> None:
    before = metric_value(metrics(slow_server), "scratchlm_cancelled_rows_total")
    body = {"prompt": "Tom", "max_tokens": 200, "temperature": 1.0, "stream": True}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{slow_server.base_url}/completions", json=body) as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # generation is running
        assert slow_server.app.state.scheduler.decoder.active == 1
    # The row goes because its client left, not because it finished: it counts as cancelled.
    wait_for(lambda: slow_server.app.state.scheduler.decoder.active == 0)
    text = metrics(slow_server)
    assert metric_value(text, "scratchlm_cancelled_rows_total") == before + 1
    assert metric_value(text, "scratchlm_batch_size") == 0


def test_full_queue_answers_429(make_server: StartServer) -> None:
    # 250 ms steps: the first row holds the batch for far longer than any test step takes
    running = make_server(max_batch=1, max_queue=1, step_delay=0.25)
    body = {"prompt": "Tom", "max_tokens": 200, "stream": True}
    url = f"{running.base_url}/completions"
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", url, json=body) as first:
            assert next(first.iter_lines()).startswith("data: ")  # in the batch
            with client.stream("POST", url, json=body) as second:
                assert second.status_code == 200  # waiting in the queue
                wait_for(lambda: len(running.app.state.scheduler.waiting) == 1)
                refused = client.post(url, json={"prompt": "Tom", "max_tokens": 2})
                assert refused.status_code == 429
                # Answered without waiting for room: the batch and the queue are still full
                # (no wall-clock bound, which a loaded machine would break).
                scheduler = running.app.state.scheduler
                assert scheduler.decoder.active == 1 and len(scheduler.waiting) == 1
                error = refused.json()["error"]
                assert "--max-queue 1" in error["message"] and error["code"] == "queue_full"
                # n rows that cannot all wait are refused as a whole.
                too_many = client.post(url, json={"prompt": "Tom", "max_tokens": 2, "n": 3})
                assert too_many.status_code == 429
        # Both streams closed: their rows are freed and the server takes work again.
        wait_for(lambda: running.app.state.scheduler.decoder.active == 0)
        wait_for(lambda: not running.app.state.scheduler.waiting)
        ok = client.post(url, json={"prompt": "Tom", "max_tokens": 2})
        assert ok.status_code == 200
    assert metric_value(metrics(running), 'scratchlm_errors_total{code="429"}') == 2
