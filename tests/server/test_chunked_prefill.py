"""Chunked prefill in BatchDecoder: the same tokens as one full prefill, and running rows keep
decoding while a long prompt is prefilled."""

from __future__ import annotations

import pytest
import torch

from scratchlm.errors import ScratchLMError
from scratchlm.inference.batch import BatchDecoder, GenerationRequest
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import SamplingSettings
from scratchlm.model import build_model
from tests.conftest import tiny_config

GREEDY = SamplingSettings(temperature=0.0, top_k=None)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(tiny_config("tiny", context_length=64)).eval()


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_chunked_prefill_gives_the_same_tokens(model: torch.nn.Module, chunk: int) -> None:
    prompts = [list(range(1, 12)), [5, 6], [9] * 20, [3, 1, 4, 1, 5, 9, 2, 6]]
    sampling = [GREEDY, GREEDY, SamplingSettings(temperature=0.0, repetition_penalty=1.3), GREEDY]
    decoder = BatchDecoder(model, max_batch=3, prefill_chunk=chunk)  # type: ignore[arg-type]
    handles: dict[int, int] = {}
    outputs: dict[int, list[int]] = {}
    waiting = list(enumerate(prompts))
    while waiting or decoder.active:
        while waiting and decoder.has_room:
            index, prompt = waiting.pop(0)
            request = GenerationRequest(prompt, max_new_tokens=8 + index, sampling=sampling[index])
            handles[decoder.add(request)] = index
        for row in decoder.step():
            outputs[handles[row.handle]] = row.generated
    engine = Engine(model)  # type: ignore[arg-type]
    for index, prompt in enumerate(prompts):
        alone = engine.generate(prompt, max_new_tokens=8 + index, sampling=sampling[index])
        assert outputs[index] == list(alone)


def test_running_rows_decode_during_a_long_prefill(model: torch.nn.Module) -> None:
    decoder = BatchDecoder(model, max_batch=3, prefill_chunk=4)  # type: ignore[arg-type]
    running = decoder.add(GenerationRequest([1, 2], max_new_tokens=30, sampling=GREEDY))
    decoder.step()  # prefill the short prompt
    long_prompt = decoder.add(GenerationRequest(list(range(1, 41)), max_new_tokens=3))
    doomed = decoder.add(GenerationRequest(list(range(1, 30)), max_new_tokens=3))
    rows = {row.handle: row for row in decoder.rows}
    for step in range(1, 6):
        decoder.step()
        assert len(rows[running].generated) == 1 + step  # one token every step, no stall
        assert decoder.prefill_backlog == 40 + 29 - 4 * step  # one chunk per step
    assert decoder.remove(doomed) is not None  # a prefilling row can leave too
    while rows[long_prompt].prefilling:
        decoder.step()
    assert decoder.rows.index(rows[long_prompt]) < 2  # moved into the decoding slots
    finished = {}
    while decoder.active:
        for row in decoder.step():
            finished[row.handle] = row.generated
    engine = Engine(model)  # type: ignore[arg-type]
    assert finished[running] == list(engine.generate([1, 2], max_new_tokens=30, sampling=GREEDY))


def test_prefill_chunk_must_be_positive(model: torch.nn.Module) -> None:
    with pytest.raises(ScratchLMError, match="prefill_chunk"):
        BatchDecoder(model, max_batch=1, prefill_chunk=0)  # type: ignore[arg-type]


def test_prompt_budget_grows_with_the_rows_in_the_batch() -> None:
    """With no row decoding a step prefills a whole chunk; while rows decode, at most 8 prompt
    tokens per row in the batch (at least 64, at most the chunk), so a few running rows get short
    steps and a burst of many rows still drains in whole chunks. The tokens match Engine's."""
    torch.manual_seed(0)
    model = build_model(tiny_config("tiny", context_length=512)).eval()
    decoder = BatchDecoder(model, max_batch=12, prefill_chunk=96)  # type: ignore[arg-type]
    prompt = [1 + index % 90 for index in range(200)]  # ids within the tiny vocabulary
    first = decoder.add(GenerationRequest(prompt, max_new_tokens=40, sampling=GREEDY))
    decoder.step()  # nothing decodes yet: one whole chunk
    assert decoder.prefill_backlog == 200 - 96
    decoder.step()
    decoder.step()  # the rest of the prompt (96, then 8): the row now decodes
    assert decoder.prefill_backlog == 0
    long_prompt = [3 + index % 90 for index in range(300)]
    decoder.add(GenerationRequest(long_prompt, max_new_tokens=4, sampling=GREEDY))
    decoder.step()  # 2 rows in the batch, one decoding: max(64, 16) = 64 prompt tokens
    assert decoder.prefill_backlog == 300 - 64
    for index in range(10):  # 12 rows: min(96, max(64, 96)) = 96 per step
        decoder.add(GenerationRequest([5 + index] * 30, max_new_tokens=2, sampling=GREEDY))
    backlog = decoder.prefill_backlog
    decoder.step()
    assert decoder.prefill_backlog == backlog - 96
    rows = {row.handle: row for row in decoder.rows}
    while rows[first].finish_reason is None:
        decoder.step()
    assert rows[first].finish_reason == "length"
    engine = Engine(model)  # type: ignore[arg-type]
    expected = engine.generate(prompt, max_new_tokens=40, sampling=GREEDY)
    assert rows[first].generated == list(expected)
