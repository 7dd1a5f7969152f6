"""The OpenAI-compatible API through the official `openai` client against a real server."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from scratchlm.chat_template import end_of_turn_id, render
from scratchlm.checkpoint import Checkpoint
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import SamplingSettings
from tests.server.conftest import RunningServer, metric_value

GREEDY = SamplingSettings(temperature=0.0, top_k=None)
PROMPT = "Once upon a time, Tom"


def client_for(server: RunningServer, api_key: str = "unused") -> OpenAI:
    # No retries: a 429 or 500 must surface, not be retried away.
    return OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0, timeout=30)


def reference(
    loaded: Checkpoint,
    prompt_ids: list[int],
    stop_ids: frozenset[int],
    max_tokens: int,
    stop_strings: tuple[str, ...] = (),
) -> tuple[str, int]:
    """What `scratchlm generate --temperature 0` produces: the text and the token count."""
    engine = Engine(loaded.model)
    text = "".join(
        engine.stream_text(
            loaded.tokenizer,
            prompt_ids,
            max_new_tokens=max_tokens,
            sampling=GREEDY,
            stop_ids=stop_ids,
            stop_strings=stop_strings,
        )
    )
    tokens = list(
        engine.generate(prompt_ids, max_new_tokens=max_tokens, sampling=GREEDY, stop_ids=stop_ids)
    )
    return text, len(tokens)


def test_health_models_and_page(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    models = client_for(server).models.list()
    assert [model.id for model in models.data] == ["tiny"]
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_greedy_completion_equals_engine(server: RunningServer, loaded: Checkpoint) -> None:
    prompt_ids = loaded.tokenizer.encode(PROMPT)
    stop_ids = frozenset({loaded.tokenizer.eos_id})
    expected, generated = reference(loaded, prompt_ids, stop_ids, 24)
    client = client_for(server)
    result = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=24, temperature=0)
    assert result.choices[0].text == expected
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None
    assert result.usage.prompt_tokens == len(prompt_ids)
    assert result.usage.completion_tokens == generated
    assert result.usage.total_tokens == len(prompt_ids) + generated

    chunks = list(
        client.completions.create(
            model="tiny",
            prompt=PROMPT,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == expected
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == "length"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == generated
    assert usage.prompt_tokens == len(prompt_ids)


def test_greedy_chat_equals_engine(server: RunningServer, loaded: Checkpoint) -> None:
    tokenizer = loaded.tokenizer
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where did the ball go?"},
    ]
    prompt_ids, _ = render(messages, tokenizer, add_generation_prompt=True)  # type: ignore[arg-type]
    stop_ids = frozenset({end_of_turn_id(tokenizer), tokenizer.eos_id})
    expected, generated = reference(loaded, prompt_ids, stop_ids, 30)
    client = client_for(server)
    result = client.chat.completions.create(
        model="tiny",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=30,
        temperature=0,
    )
    assert result.choices[0].message.content == expected
    assert result.choices[0].message.role == "assistant"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (
        len(prompt_ids),
        generated,
    )
    stream = client.chat.completions.create(
        model="tiny",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=30,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == expected
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == generated
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_stop_strings_cut_the_text(server: RunningServer, loaded: Checkpoint) -> None:
    prompt_ids = loaded.tokenizer.encode(PROMPT)
    stop_ids = frozenset({loaded.tokenizer.eos_id})
    full, _ = reference(loaded, prompt_ids, stop_ids, 40)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop, "the random model produced no text to cut"
    expected, _ = reference(loaded, prompt_ids, stop_ids, 40, (stop,))
    client = client_for(server)
    for stream in (False, True):
        response = client.completions.create(
            model="tiny",
            prompt=PROMPT,
            max_tokens=40,
            temperature=0,
            stop=[stop],
            stream=stream,
        )
        if stream:
            chunks = [chunk for chunk in response if chunk.choices]  # type: ignore[union-attr]
            text = "".join(chunk.choices[0].text for chunk in chunks)
            finish = chunks[-1].choices[0].finish_reason
        else:
            text = response.choices[0].text  # type: ignore[union-attr]
            finish = response.choices[0].finish_reason  # type: ignore[union-attr]
        assert text == expected and finish == "stop"


def test_n_choices_with_a_seed_repeat(server: RunningServer) -> None:
    client = client_for(server)

    def sample() -> list[str]:
        result = client.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=12, temperature=1.0, seed=7, n=3, user="u1"
        )
        assert [choice.index for choice in result.choices] == [0, 1, 2]
        assert result.usage is not None
        assert result.usage.completion_tokens <= 36
        return [choice.text for choice in result.choices]

    first = sample()
    assert sample() == first
    assert len(set(first)) > 1  # the choices are independent rows with their own seeds


def test_streaming_n_choices_each_finish(server: RunningServer) -> None:
    stream = client_for(server).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=8,
        n=2,
        seed=1,
        stream=True,
    )
    finishes = {
        chunk.choices[0].index: chunk.choices[0].finish_reason
        for chunk in stream
        if chunk.choices and chunk.choices[0].finish_reason
    }
    assert set(finishes) == {0, 1}


def test_metrics_in_prometheus_format(server: RunningServer) -> None:
    client_for(server).completions.create(model="tiny", prompt="Tom", max_tokens=3)
    text = httpx.get(f"{server.url}/metrics").text
    assert metric_value(text, "scratchlm_generated_tokens_total") >= 3
    assert metric_value(text, "scratchlm_prompt_tokens_total") >= 1
    for name in (
        "scratchlm_requests_total",
        "scratchlm_tokens_per_second",
        "scratchlm_queue_depth",
        "scratchlm_batch_size",
        "scratchlm_batch_size_max",
        "scratchlm_time_to_first_token_seconds",
        "scratchlm_time_to_first_token_seconds_count",
    ):
        assert f"\n{name}" in "\n" + text
    assert "# TYPE scratchlm_time_to_first_token_seconds summary" in text


def test_generation_failure_ends_only_that_request(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = server.app.state.scheduler

    def broken_step() -> list[object]:
        raise RuntimeError("simulated device failure")

    # The scheduler replaces a failed decoder with a fresh one, which drops this patch.
    monkeypatch.setattr(scheduler.decoder, "step", broken_step)
    response = httpx.post(
        f"{server.base_url}/completions", json={"prompt": "Tom", "max_tokens": 5}, timeout=30
    )
    assert response.status_code == 500
    assert "simulated device failure" in response.json()["error"]["message"]
    assert response.json()["error"]["type"] == "server_error"

    monkeypatch.setattr(scheduler.decoder, "step", broken_step)
    with httpx.stream(
        "POST",
        f"{server.base_url}/completions",
        json={"prompt": "Tom", "max_tokens": 5, "stream": True},
        timeout=30,
    ) as streamed:
        lines = [line for line in streamed.iter_lines() if line.startswith("data: ")]
    assert "simulated device failure" in lines[-1] and '"error"' in lines[-1]

    result = client_for(server).completions.create(model="tiny", prompt="Tom", max_tokens=4)
    assert result.choices[0].finish_reason in ("stop", "length")
