"""The BatchDecoder (continuous batching): every row gets the tokens it would get alone, while
rows join and leave between steps."""

from __future__ import annotations

import pytest

from scratchlm.inference.batch import BatchDecoder, GenerationRequest
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import GREEDY, SamplingSettings
from tests.inference.test_engine import make_model


@pytest.mark.parametrize("name", ["learned+mha", "rope+gqa+qknorm"])
def test_batched_generation_equals_each_alone(name: str) -> None:
    model = make_model(name)
    prompts = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5, 8, 9, 7, 9], [2, 7, 1]]
    settings = [
        GREEDY,
        SamplingSettings(temperature=0.9, top_k=10),
        GREEDY,
        SamplingSettings(temperature=1.2, top_p=0.9, repetition_penalty=1.3),
    ]
    requests = [
        GenerationRequest(p, max_new_tokens=12 + i, sampling=s, seed=i)
        for i, (p, s) in enumerate(zip(prompts, settings, strict=True))
    ]
    batched = Engine(model).generate_batch(requests)
    for request, output in zip(requests, batched, strict=True):
        alone = list(
            Engine(model).generate(
                request.prompt_ids,
                max_new_tokens=request.max_new_tokens,
                sampling=request.sampling,
                seed=request.seed,
            )
        )
        assert output.token_ids == alone
        assert output.prompt_tokens == len(request.prompt_ids)


def test_rows_join_and_leave_without_disturbing_others() -> None:
    model = make_model("rope+gqa+qknorm")
    decoder = BatchDecoder(model, max_batch=3)
    first = decoder.add(GenerationRequest([1, 2, 3], max_new_tokens=20, sampling=GREEDY))
    for _ in range(4):
        decoder.step()
    doomed = decoder.add(GenerationRequest([7, 7], max_new_tokens=20, sampling=GREEDY))
    late = decoder.add(GenerationRequest([4, 5, 6, 7], max_new_tokens=6, sampling=GREEDY))
    decoder.step()
    assert decoder.remove(doomed) is not None and decoder.active == 2
    finished = {}
    while decoder.active:
        for row in decoder.step():
            finished[row.handle] = row.generated
    engine = Engine(model)
    assert finished[first] == list(engine.generate([1, 2, 3], max_new_tokens=20, sampling=GREEDY))
    assert finished[late] == list(engine.generate([4, 5, 6, 7], max_new_tokens=6, sampling=GREEDY))
