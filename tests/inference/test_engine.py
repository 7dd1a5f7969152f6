from __future__ import annotations

import copy

import pytest
import torch

from scratchlm.errors import ScratchLMError
from scratchlm.inference.beam import beam_search, normalized_score
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import GREEDY, SamplingSettings
from scratchlm.inference.speculative import SpeculativeStats, speculative_generate
from scratchlm.inference.streaming import StopStringFilter
from scratchlm.model import GPT, build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config

ARCHITECTURES = {
    "learned+mha": ("aksis-small", {}),
    "rope+gqa+qknorm": ("akane-124m", {}),
    "rope+mha": ("llama-15m", {}),
    "rope+mqa": ("tiny", {"n_kv_head": 1}),
}


def make_model(name: str, seed: int = 0, **overrides: object) -> GPT:
    preset, extra = ARCHITECTURES[name]
    torch.manual_seed(seed)
    # An untied head and large weights: a random model with a tied head mostly predicts its last
    # input token again, and near-uniform logits give near-ties; neither exercises generation.
    values = {
        "context_length": 48,
        "tie_embeddings": False,
        "init_std": 0.3,
        "zero_init_output": False,
    }
    model = build_model(tiny_config(preset, **{**values, **extra, **overrides}))
    return model.eval()


@torch.no_grad()
def greedy_without_cache(model: GPT, prompt: list[int], new_tokens: int) -> list[int]:
    ids = list(prompt)
    for _ in range(new_tokens):
        logits = model(torch.tensor([ids]))[0, -1, : model.config.vocab_size]
        ids.append(int(logits.argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_cached_greedy_equals_full_recomputation(name: str) -> None:
    model = make_model(name)
    prompt = [5, 17, 3, 44, 9]
    cached = list(Engine(model).generate(prompt, max_new_tokens=30, sampling=GREEDY))
    assert cached == greedy_without_cache(model, prompt, 30)
    assert len(set(cached)) > 3  # a varied continuation, not one token repeated


def test_same_seed_same_tokens() -> None:
    model = make_model("rope+gqa+qknorm")
    settings = SamplingSettings(temperature=1.0, top_k=20)
    runs = [
        list(Engine(model).generate([1, 2, 3], max_new_tokens=20, sampling=settings, seed=s))
        for s in (4, 4, 5)
    ]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_generation_stops_at_context_and_on_stop_ids() -> None:
    model = make_model("rope+mha")
    engine = Engine(model)
    tokens = list(engine.generate(list(range(1, 40)), max_new_tokens=100, sampling=GREEDY))
    # 48 tokens fill the context; the token predicted from a full context is still produced
    assert len(tokens) == 48 - 39 + 1 and engine.finish_reason == "length"
    first = tokens[0]
    assert (
        list(
            engine.generate(
                list(range(1, 40)), max_new_tokens=10, sampling=GREEDY, stop_ids=frozenset({first})
            )
        )
        == []
    )
    assert engine.finish_reason == "stop"


def test_long_prompt_refused_unless_truncated() -> None:
    engine = Engine(make_model("rope+mha"))
    with pytest.raises(ScratchLMError, match="context"):
        list(engine.generate(list(range(60)), max_new_tokens=3, sampling=GREEDY))
    tokens = list(
        engine.generate(list(range(60)), max_new_tokens=3, sampling=GREEDY, truncate=True)
    )
    assert engine.truncated_tokens == 60 - 47 and len(tokens) == 2


def test_stop_string_split_across_deltas() -> None:
    stops = StopStringFilter(["lo W"])
    shown = [stops.push(piece) for piece in ["Hel", "l", "o", " Wo", "rld"]]
    assert "".join(shown) == "Hel" and stops.stopped
    partial = StopStringFilter(["END"])
    assert partial.push("abcE") == "abc" and partial.push("x") == "Ex" and partial.flush() == ""


def test_stop_string_in_generated_text(bpe_tokenizer: Tokenizer) -> None:
    model = build_model(tiny_config("tiny", vocab_size=bpe_tokenizer.vocab_size, context_length=64))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    engine = Engine(model.eval())
    prompt = bpe_tokenizer.encode("Once upon")
    full = "".join(engine.stream_text(bpe_tokenizer, prompt, max_new_tokens=40, sampling=GREEDY))
    tokens = list(engine.generate(prompt, max_new_tokens=40, sampling=GREEDY))
    # a stop string that straddles the boundary between the 3rd and 4th generated tokens
    boundary = len(bpe_tokenizer.decode(tokens[:3]))
    stop = full[boundary - 2 : boundary + 2]
    assert len(stop) == 4
    cut = "".join(
        engine.stream_text(
            bpe_tokenizer, prompt, max_new_tokens=40, sampling=GREEDY, stop_strings=[stop]
        )
    )
    assert cut == full[: full.find(stop)] and engine.finish_reason == "stop"


def test_beam_width_one_is_greedy_and_wider_scores_at_least_greedy() -> None:
    model = make_model("rope+gqa+qknorm", seed=1)
    prompt = [4, 8, 15]
    greedy = list(Engine(model).generate(prompt, max_new_tokens=10, sampling=GREEDY))
    assert beam_search(model, prompt, beam_width=1, max_new_tokens=10)[0].token_ids == greedy
    with torch.no_grad():
        log_probs = torch.log_softmax(
            model(torch.tensor([prompt + greedy]))[0, :, : model.config.vocab_size], -1
        )
    greedy_logp = sum(
        float(log_probs[len(prompt) - 1 + i, token]) for i, token in enumerate(greedy)
    )
    results = beam_search(model, prompt, beam_width=4, max_new_tokens=10)
    assert len(results) == 4 and results[0].score >= results[-1].score
    assert results[0].score >= normalized_score(greedy_logp, 10, 1.0) - 1e-5


def test_speculative_greedy_equals_plain_greedy() -> None:
    target = make_model("rope+gqa+qknorm", seed=2)
    draft = copy.deepcopy(target)  # a draft that agrees with the target only sometimes
    torch.manual_seed(9)
    with torch.no_grad():
        draft.lm_head.weight.add_(torch.randn_like(draft.lm_head.weight) * 0.3)
    prompt = [3, 14, 15, 92]
    plain = list(Engine(target).generate(prompt, max_new_tokens=25, sampling=GREEDY))
    assert len(set(plain)) > 5
    stats = SpeculativeStats()
    fast = list(
        speculative_generate(
            target, draft, prompt, max_new_tokens=25, sampling=GREEDY, draft_tokens=4, stats=stats
        )
    )
    assert fast == plain
    assert 0 < stats.acceptance_rate < 1


@pytest.mark.parametrize("settings", [GREEDY, SamplingSettings(temperature=1.0, top_k=None)])
def test_speculative_with_identical_draft_accepts_everything(settings: SamplingSettings) -> None:
    target = make_model("rope+mha", seed=4)
    stats = SpeculativeStats()
    tokens = list(
        speculative_generate(
            target,
            target,
            [1, 2],
            max_new_tokens=20,
            sampling=settings,
            draft_tokens=3,
            seed=0,
            stats=stats,
        )
    )
    assert len(tokens) == 20 and stats.acceptance_rate == 1.0


def test_speculative_refuses_mismatched_vocabularies_and_penalties() -> None:
    target = make_model("rope+mha")
    other = make_model("rope+mha", vocab_size=50)
    with pytest.raises(ScratchLMError, match="vocabulary"):
        list(speculative_generate(target, other, [1], max_new_tokens=3, sampling=GREEDY))
    with pytest.raises(ScratchLMError, match="penalt"):
        list(
            speculative_generate(
                target,
                target,
                [1],
                max_new_tokens=3,
                sampling=SamplingSettings(repetition_penalty=1.2),
            )
        )
