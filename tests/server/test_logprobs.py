"""Log-probabilities, echo and list prompts: what evaluation tools (lm-eval's local-completions)
send. Every returned logprob is checked against log_softmax of one direct full forward of the
model over the whole sequence, never against the server's own numbers."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import torch
from openai import OpenAI

from scratchlm.chat_template import end_of_turn_id, render
from scratchlm.checkpoint import Checkpoint
from scratchlm.server.openai import token_text
from tests.server.conftest import RunningServer, StartServer

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
PROMPT = "Once upon a time, Tom"
TOLERANCE = 1e-4


def client_for(server: RunningServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=30)


@torch.inference_mode()
def full_logprobs(loaded: Checkpoint, ids: list[int]) -> torch.Tensor:
    """log_softmax (float32) of the model's logits at every position of one full forward:
    row p holds the distribution of the token after ids[p]."""
    model = loaded.model
    logits = model(torch.tensor([ids], dtype=torch.long))[0, :, : model.config.vocab_size]
    return torch.log_softmax(logits.float(), dim=-1)


def greedy_ids(loaded: Checkpoint, prompt: list[int], count: int, stop: set[int]) -> list[int]:
    """Greedy continuation by full forwards (the reference, no KV cache)."""
    ids = list(prompt)
    for _ in range(count):
        token = int(full_logprobs(loaded, ids)[-1].argmax())
        if token in stop:
            break
        ids.append(token)
    return ids[len(prompt) :]


def check_top(
    loaded: Checkpoint, top: dict[str, float], reference_row: torch.Tensor, size: int
) -> None:
    """A legacy top_logprobs entry holds the `size` best tokens with their reference logprobs."""
    values, ids = reference_row.topk(size)
    expected: dict[str, float] = {}
    for token, value in zip(ids.tolist(), values.tolist(), strict=True):
        expected.setdefault(token_text(loaded.tokenizer, token), value)
    assert set(top) == set(expected)
    for text, value in top.items():
        assert abs(value - expected[text]) < TOLERANCE, (text, value, expected[text])


def test_echo_with_max_tokens_0_scores_the_prompt(
    server: RunningServer, loaded: Checkpoint
) -> None:
    ids = loaded.tokenizer.encode(PROMPT)
    reply = client_for(server).completions.create(
        model="tiny", prompt=PROMPT, echo=True, max_tokens=0, logprobs=5
    )
    choice = reply.choices[0]
    assert choice.text == PROMPT
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 0 and reply.usage.prompt_tokens == len(ids)
    logprobs = choice.logprobs
    assert logprobs is not None and logprobs.tokens is not None
    assert logprobs.token_logprobs is not None and logprobs.top_logprobs is not None
    assert logprobs.tokens == [token_text(loaded.tokenizer, token) for token in ids]
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    reference = full_logprobs(loaded, ids)
    for position in range(1, len(ids)):
        value = logprobs.token_logprobs[position]
        assert value is not None
        assert abs(value - float(reference[position - 1, ids[position]])) < TOLERANCE
        top = logprobs.top_logprobs[position]
        assert top is not None
        check_top(loaded, top, reference[position - 1], 5)
    offsets = logprobs.text_offset
    assert offsets is not None and offsets[0] == 0
    assert offsets == [
        sum(len(text) for text in logprobs.tokens[:index]) for index in range(len(ids))
    ]


@pytest.mark.parametrize("chunk", [None, 3])
def test_echo_and_generated_logprobs_equal_a_full_forward(
    make_server: StartServer, loaded: Checkpoint, chunk: int | None
) -> None:
    """Greedy: the prompt's and the new tokens' logprobs match one forward over the whole text,
    and each new token is the top-1 of its top_logprobs (also with a chunked prefill)."""
    server = make_server(prefill_chunk=chunk or 256)
    tokenizer = loaded.tokenizer
    prompt = tokenizer.encode(PROMPT)
    expected = greedy_ids(loaded, prompt, 8, {tokenizer.eos_id})
    body = {"prompt": prompt, "max_tokens": 8, "temperature": 0, "echo": True, "logprobs": 2}
    reply = httpx.post(server.url + COMPLETIONS, json=body, timeout=30).json()
    choice = reply["choices"][0]
    assert choice["text"] == tokenizer.decode(prompt) + tokenizer.decode(expected)
    logprobs = choice["logprobs"]
    sequence = prompt + expected
    assert logprobs["tokens"] == [token_text(tokenizer, token) for token in sequence]
    reference = full_logprobs(loaded, sequence)
    assert logprobs["token_logprobs"][0] is None
    for position in range(1, len(sequence)):
        value = logprobs["token_logprobs"][position]
        assert abs(value - float(reference[position - 1, sequence[position]])) < TOLERANCE
        check_top(loaded, logprobs["top_logprobs"][position], reference[position - 1], 2)
    for position in range(len(prompt), len(sequence)):  # greedy: the chosen token is the top-1
        top = logprobs["top_logprobs"][position]
        best = max(top, key=top.get)
        assert best == logprobs["tokens"][position]
        assert abs(top[best] - logprobs["token_logprobs"][position]) < TOLERANCE
    assert reply["usage"]["completion_tokens"] == len(expected)


def test_sampled_logprobs_are_the_raw_distribution(
    server: RunningServer, loaded: Checkpoint
) -> None:
    """With temperature and top-k, the reported logprobs are still log_softmax of the raw logits
    (as OpenAI reports them), not of the sampling distribution."""
    tokenizer = loaded.tokenizer
    prompt = tokenizer.encode(PROMPT)
    body = {
        "prompt": prompt,
        "max_tokens": 6,
        "temperature": 1.5,
        "top_k": 5,
        "seed": 7,
        "logprobs": 0,
    }
    choice = httpx.post(server.url + COMPLETIONS, json=body, timeout=30).json()["choices"][0]
    logprobs = choice["logprobs"]
    assert logprobs["top_logprobs"] == [{} for _ in logprobs["tokens"]]  # logprobs 0: none
    assert logprobs["text_offset"][0] == len(tokenizer.decode(prompt))
    sequence = list(prompt)
    for text, value in zip(logprobs["tokens"], logprobs["token_logprobs"], strict=True):
        row = full_logprobs(loaded, sequence)[-1]
        candidates = [
            token
            for token in range(row.shape[0])
            if token_text(tokenizer, token) == text and abs(float(row[token]) - value) < TOLERANCE
        ]
        assert candidates, (text, value)
        if len(candidates) > 1:
            break  # two tokens with the same text and logprob: the rest cannot be told apart
        sequence.append(candidates[0])


def test_list_prompts_give_prompt_major_choices(server: RunningServer, loaded: Checkpoint) -> None:
    tokenizer = loaded.tokenizer
    texts = [PROMPT, "Lily saw a", "The dog"]
    body: dict[str, Any] = {"prompt": texts, "max_tokens": 4, "temperature": 0, "n": 2}
    reply = httpx.post(server.url + COMPLETIONS, json=body, timeout=30).json()
    choices = reply["choices"]
    assert [choice["index"] for choice in choices] == list(range(6))
    prompts = [tokenizer.encode(text) for text in texts]
    completion_tokens = 0
    for number, prompt in enumerate(prompts):
        expected = greedy_ids(loaded, prompt, 4, {tokenizer.eos_id})
        completion_tokens += 2 * len(expected)
        for j in range(2):
            assert choices[number * 2 + j]["text"] == tokenizer.decode(expected)
    assert reply["usage"]["prompt_tokens"] == sum(len(prompt) for prompt in prompts)
    assert reply["usage"]["completion_tokens"] == completion_tokens
    # A list of token-id lists, with echo and logprobs: each choice scores its own prompt.
    body = {"prompt": prompts, "max_tokens": 0, "echo": True, "logprobs": 1}
    reply = httpx.post(server.url + COMPLETIONS, json=body, timeout=30).json()
    assert len(reply["choices"]) == 3
    for choice, prompt in zip(reply["choices"], prompts, strict=True):
        assert choice["text"] == tokenizer.decode(prompt)
        reference = full_logprobs(loaded, prompt)
        values = choice["logprobs"]["token_logprobs"]
        assert len(values) == len(prompt) and values[0] is None
        for position in range(1, len(prompt)):
            expected_value = float(reference[position - 1, prompt[position]])
            assert abs(values[position] - expected_value) < TOLERANCE
    # One prompt given as a list of one string, or of one id list: one choice.
    for single in ([PROMPT], [prompts[0]]):
        reply = httpx.post(
            server.url + COMPLETIONS, json={"prompt": single, "max_tokens": 2}, timeout=30
        ).json()
        assert len(reply["choices"]) == 1


def test_echo_without_logprobs_prepends_the_prompt(server: RunningServer) -> None:
    body = {"prompt": PROMPT, "max_tokens": 3, "temperature": 0}
    plain = httpx.post(server.url + COMPLETIONS, json=body, timeout=30).json()
    echoed = httpx.post(server.url + COMPLETIONS, json={**body, "echo": True}, timeout=30).json()
    assert echoed["choices"][0]["text"] == PROMPT + plain["choices"][0]["text"]
    assert echoed["choices"][0]["logprobs"] is None


def test_chat_logprobs_shape_and_values(server: RunningServer, loaded: Checkpoint) -> None:
    tokenizer = loaded.tokenizer
    messages: list[Any] = [{"role": "user", "content": "Tell me a story."}]
    reply = client_for(server).chat.completions.create(
        model="tiny", messages=messages, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    )
    prompt, _ = render(messages, tokenizer, add_generation_prompt=True)
    expected = greedy_ids(loaded, prompt, 5, {end_of_turn_id(tokenizer), tokenizer.eos_id})
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert len(logprobs.content) == len(expected)
    sequence = prompt + expected
    reference = full_logprobs(loaded, sequence)
    for offset, item in enumerate(logprobs.content):
        position = len(prompt) + offset
        assert item.token == token_text(tokenizer, sequence[position])
        assert item.bytes == list(item.token.encode("utf-8"))
        assert abs(item.logprob - float(reference[position - 1, sequence[position]])) < TOLERANCE
        assert len(item.top_logprobs) == 3
        values, ids = reference[position - 1].topk(3)
        for entry, token, value in zip(
            item.top_logprobs, ids.tolist(), values.tolist(), strict=True
        ):
            assert entry.token == token_text(tokenizer, token)
            assert abs(entry.logprob - value) < TOLERANCE
        assert item.top_logprobs[0].token == item.token  # greedy
    # logprobs true without top_logprobs: the chosen tokens only.
    body = {"messages": messages, "max_tokens": 2, "logprobs": True}
    choice = httpx.post(server.url + CHAT, json=body, timeout=30).json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert content and all(item["top_logprobs"] == [] for item in content)
    # Not asked for: null, as before.
    body = {"messages": messages, "max_tokens": 2}
    choice = httpx.post(server.url + CHAT, json=body, timeout=30).json()["choices"][0]
    assert choice["logprobs"] is None


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (COMPLETIONS, {"prompt": PROMPT, "logprobs": 6}, "logprobs"),
        (COMPLETIONS, {"prompt": PROMPT, "logprobs": -1}, "logprobs"),
        (COMPLETIONS, {"prompt": PROMPT, "max_tokens": 0}, "max_tokens"),
        (COMPLETIONS, {"prompt": [[1, 2], []]}, "prompt.1"),
        (
            CHAT,
            {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2},
            "top_logprobs",
        ),
        (
            CHAT,
            {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 21},
            "top_logprobs",
        ),
    ],
)
def test_out_of_range_logprob_fields_are_400_naming_them(
    server: RunningServer, path: str, body: dict[str, Any], param: str
) -> None:
    response = httpx.post(server.url + path, json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param, response.text


def test_echo_logprobs_survive_a_stop_string(server: RunningServer, loaded: Checkpoint) -> None:
    """A stop string ends the choice before the row's end: the prompt's logprobs still come."""
    tokenizer = loaded.tokenizer
    prompt = tokenizer.encode(PROMPT)
    expected = greedy_ids(loaded, prompt, 8, {tokenizer.eos_id})
    full_text = tokenizer.decode(expected)
    stop = full_text.strip()[len(full_text.strip()) // 2 :][:3]
    assert stop
    body = {
        "prompt": PROMPT,
        "max_tokens": 8,
        "temperature": 0,
        "echo": True,
        "logprobs": 1,
        "stop": stop,
    }
    choice = httpx.post(server.url + COMPLETIONS, json=body, timeout=30).json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == PROMPT + full_text[: full_text.index(stop)]
    values = choice["logprobs"]["token_logprobs"]
    assert len(values) > len(prompt) and values[0] is None
    reference = full_logprobs(loaded, prompt)
    for position in range(1, len(prompt)):
        assert abs(values[position] - float(reference[position - 1, prompt[position]])) < TOLERANCE


def stream_events(server: RunningServer, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = httpx.post(server.url + path, json={**body, "stream": True}, timeout=30)
    assert response.status_code == 200, response.text
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_streamed_logprobs_and_echo_equal_the_whole_response(server: RunningServer) -> None:
    """Streaming: each chunk carries its tokens' logprobs; joined, chunks give the same text and
    logprobs (echoed prompt included) as the non-streamed response."""
    body = {
        "prompt": [PROMPT, "Lily saw a"],
        "max_tokens": 6,
        "temperature": 0,
        "echo": True,
        "logprobs": 2,
        "n": 2,
    }
    whole = httpx.post(server.url + COMPLETIONS, json=body, timeout=30).json()["choices"]
    texts = [""] * 4
    joined: list[dict[str, list[Any]]] = [
        {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for _ in range(4)
    ]
    for event in stream_events(server, COMPLETIONS, body):
        for choice in event["choices"]:
            texts[choice["index"]] += choice["text"]
            if choice["logprobs"] is not None:
                for key, values in choice["logprobs"].items():
                    joined[choice["index"]][key].extend(values)
    for index, choice in enumerate(whole):
        assert texts[index] == choice["text"]
        expected = choice["logprobs"]
        assert joined[index]["tokens"] == expected["tokens"]
        assert joined[index]["text_offset"] == expected["text_offset"]
        assert joined[index]["top_logprobs"] == expected["top_logprobs"]
        assert joined[index]["token_logprobs"] == expected["token_logprobs"]


def test_streamed_chat_logprobs(server: RunningServer) -> None:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 5,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
    }
    whole = httpx.post(server.url + CHAT, json=body, timeout=30).json()["choices"][0]
    content: list[Any] = []
    reply = ""
    for event in stream_events(server, CHAT, body):
        for choice in event["choices"]:
            reply += choice["delta"].get("content") or ""
            if choice["logprobs"] is not None:
                content.extend(choice["logprobs"]["content"])
    assert reply == whole["message"]["content"]
    assert content == whole["logprobs"]["content"]
    # The official client parses the chunks.
    stream = client_for(server).chat.completions.create(model="tiny", stream=True, **body)
    items = [
        item
        for chunk in stream
        for choice in chunk.choices
        if choice.logprobs is not None and choice.logprobs.content
        for item in choice.logprobs.content
    ]
    assert [item.token for item in items] == [item["token"] for item in content]
