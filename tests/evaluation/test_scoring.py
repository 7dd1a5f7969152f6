"""The benchmark scorer against references: a naive scorer (one full forward per request, no
sharing, no batching, no cache), hand-made metric cases, and the aggregate on hand numbers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.examples import (
    Continuation,
    LastWordExample,
    MultipleChoiceExample,
    TaskSpec,
)
from scratchlm.evaluation.perplexity import evaluate_text
from scratchlm.evaluation.scoring import (
    Loglikelihood,
    LoglikelihoodRequest,
    ScoringStats,
    TaskResult,
    aggregate_entries,
    centered_aggregate,
    encode_pair,
    score_loglikelihoods,
    score_task,
)
from scratchlm.inference.kernels.decoder import FastDecoder, kernel_logits
from scratchlm.inference.quantize import quantize_for_cpu
from scratchlm.model import GPT, build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import SAMPLE_TEXT, tiny_config
from tests.inference.test_quantized_decode import (
    _library_or_skip,
    _quantize_inputs_like_the_kernel,
)

PRESETS = ("tiny", "llama-15m", "aksis-small", "akane-124m")  # GPT-2 layout; QK-norm + GQA


def naive_loglikelihood(model: GPT, request: LoglikelihoodRequest) -> Loglikelihood:
    """One full forward over context + continuation from position 0, the oldest tokens dropped
    to fit (lm-eval's `[-(max_length + 1):][:-1]`)."""
    tokens = [*request.context_ids, *request.continuation_ids]
    tokens = tokens[-(model.config.context_length + 1) :]
    count = len(request.continuation_ids)
    with torch.no_grad():
        logits = model(torch.tensor([tokens[:-1]]))[0, :, : model.config.vocab_size].double()
    logprobs = torch.log_softmax(logits, dim=-1)[-count:]
    targets = torch.tensor(tokens[-count:])
    total = float(logprobs.gather(-1, targets[:, None]).sum())
    greedy = bool((logits[-count:].argmax(-1) == targets).all())
    return Loglikelihood(total, count, greedy)


def tiny_model(preset: str, tokenizer: Tokenizer, context_length: int = 32, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = build_model(
        tiny_config(preset, vocab_size=tokenizer.vocab_size, context_length=context_length)
    )
    # Larger weights than the init: distinct, confident predictions that expose any mismatch.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model.eval()


def sample_requests(tokenizer: Tokenizer) -> list[LoglikelihoodRequest]:
    """Shared contexts with continuations of several lengths, a context per choice, an empty
    context, a trailing space, and contexts long enough to be left-truncated at 32 tokens."""
    words = SAMPLE_TEXT.split()
    pairs = []
    for start in range(0, 40, 7):
        context = " ".join(words[start : start + 4 + start % 5])
        for ending in (" cat", " the red ball.", " Lily helped him find it", " end"):
            pairs.append((context, ending))
    pairs += [("Tom was sad. His friend ", "Lily"), ("", "Once upon a time")]
    pairs += [(" ".join(words[:40]), " The end."), (" ".join(words[3:50]), " Tom")]
    return [encode_pair(tokenizer, context, ending) for context, ending in pairs]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_scores_equal_a_naive_full_forward_per_request(
    preset: str, batch_size: int, bpe_tokenizer: Tokenizer
) -> None:
    model = tiny_model(preset, bpe_tokenizer)
    requests = sample_requests(bpe_tokenizer)
    stats = ScoringStats()
    scores = score_loglikelihoods(model, requests, batch_size=batch_size, stats=stats)
    assert stats.truncated == 2
    for request, score in zip(requests, scores, strict=True):
        expected = naive_loglikelihood(model, request)
        assert score.tokens == expected.tokens == len(request.continuation_ids)
        assert score.logprob == pytest.approx(expected.logprob, abs=1e-5, rel=1e-5)
        assert score.is_greedy == expected.is_greedy


@pytest.mark.parametrize("method", ["q8", "q4", "bf16"])
@pytest.mark.parametrize("preset", ["tiny", "akane-124m"])
def test_a_quantized_model_is_scored_through_the_kernels(
    preset: str, method: str, bpe_tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its PyTorch forward would dequantize every weight at every op; the kernels read the packed
    blocks. The reference is a full PyTorch forward of the same quantized weights with the
    kernel's input rounding emulated: what remains is summation order and, now and then, an
    input code that rounds the other way at a boundary (~1e-2 of a logit at most)."""
    _library_or_skip()
    model = quantize_for_cpu(tiny_model(preset, bpe_tokenizer), method)
    reference = quantize_for_cpu(tiny_model(preset, bpe_tokenizer), method)
    _quantize_inputs_like_the_kernel(reference, method)
    calls: list[int] = []
    forward = FastDecoder.forward

    def counted(self: FastDecoder, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(len(args[0]))  # type: ignore[arg-type]
        return forward(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(FastDecoder, "forward", counted)
    requests = sample_requests(bpe_tokenizer)
    scores = score_loglikelihoods(model, requests, batch_size=5)
    assert calls, "the kernels were not used"
    for request, score in zip(requests, scores, strict=True):
        expected = naive_loglikelihood(reference, request)
        assert score.tokens == expected.tokens
        assert score.logprob == pytest.approx(expected.logprob, abs=5e-2, rel=1e-2)


@pytest.mark.parametrize("method", ["none", "q8", "q4", "bf16"])
def test_perplexity_of_a_quantized_model_through_the_kernels(
    method: str, bpe_tokenizer: Tokenizer
) -> None:
    """`evaluate_text(..., fast_logits=kernel_logits)`: the same loss as the model's forward with
    the kernel's input rounding emulated (windows of 32 tokens and a shorter last one); an fp32
    model keeps its forward (kernel_logits gives None)."""
    _library_or_skip()
    model = quantize_for_cpu(tiny_model("akane-124m", bpe_tokenizer), method)
    reference = quantize_for_cpu(tiny_model("akane-124m", bpe_tokenizer), method)
    if method != "none":
        _quantize_inputs_like_the_kernel(reference, method)
    inputs = torch.tensor([bpe_tokenizer.encode(SAMPLE_TEXT)[:32]])
    assert (kernel_logits(model, inputs) is None) == (method == "none")
    documents = [SAMPLE_TEXT, SAMPLE_TEXT[: len(SAMPLE_TEXT) // 3]]
    cpu = torch.device("cpu")
    fast = evaluate_text(model, bpe_tokenizer, documents, device=cpu, fast_logits=kernel_logits)
    expected = evaluate_text(reference, bpe_tokenizer, documents, device=cpu)
    assert fast.tokens == expected.tokens > 64
    assert fast.loss == pytest.approx(expected.loss, rel=2e-3)


def test_greedy_flag_is_true_for_the_models_own_continuation(bpe_tokenizer: Tokenizer) -> None:
    model = tiny_model("tiny", bpe_tokenizer)
    context = tuple(bpe_tokenizer.encode("Once upon a time, there was"))
    tokens = list(context)
    with torch.no_grad():
        for _ in range(3):
            logits = model(torch.tensor([tokens]))[0, -1, : model.config.vocab_size]
            tokens.append(int(logits.argmax()))
    greedy = LoglikelihoodRequest(context, tuple(tokens[len(context) :]))
    other = (tokens[-1] + 1) % model.config.vocab_size
    not_greedy = LoglikelihoodRequest(context, (*tokens[len(context) : -1], other))
    scores = score_loglikelihoods(model, [greedy, not_greedy], batch_size=2)
    assert [score.is_greedy for score in scores] == [True, False]


def test_shared_contexts_are_computed_once(bpe_tokenizer: Tokenizer) -> None:
    model = tiny_model("tiny", bpe_tokenizer)
    context = tuple(bpe_tokenizer.encode("Once upon a time, there was a little cat"))
    endings = [tuple(bpe_tokenizer.encode(text)) for text in (" named", " Tom", " who ran")]
    stats = ScoringStats()
    score_loglikelihoods(
        model, [LoglikelihoodRequest(context, ending) for ending in endings], stats=stats
    )
    assert stats.tokens == len(context) - 1 + sum(len(ending) for ending in endings)


def test_encode_pair_moves_trailing_spaces_and_starts_an_empty_context(
    bpe_tokenizer: Tokenizer,
) -> None:
    moved = encode_pair(bpe_tokenizer, "Tom was sad. His friend ", "Lily")
    assert moved.context_ids == tuple(bpe_tokenizer.encode("Tom was sad. His friend"))
    whole = bpe_tokenizer.encode("Tom was sad. His friend Lily")
    assert moved.continuation_ids == tuple(whole[len(moved.context_ids) :])
    assert bpe_tokenizer.decode(list(moved.continuation_ids)) == " Lily"
    empty = encode_pair(bpe_tokenizer, "", "Once upon")
    assert empty.context_ids == (bpe_tokenizer.eos_id,)
    assert empty.continuation_ids == tuple(bpe_tokenizer.encode("Once upon"))


def test_left_truncation_keeps_the_continuation(bpe_tokenizer: Tokenizer) -> None:
    model = tiny_model("tiny", bpe_tokenizer, context_length=16)
    context = tuple(range(10, 40))  # 30 tokens
    continuation = (50, 51, 52, 53)
    stats = ScoringStats()
    (score,) = score_loglikelihoods(
        model, [LoglikelihoodRequest(context, continuation)], stats=stats
    )
    # 16 positions: the last 13 context tokens, then the continuation less its last token.
    kept = LoglikelihoodRequest(context[-13:], continuation)
    assert stats.truncated == 1 and score.tokens == 4
    assert score.logprob == pytest.approx(naive_loglikelihood(model, kept).logprob, abs=1e-5)
    with pytest.raises(ScratchLMError, match="does not fit the model's context of 16"):
        score_loglikelihoods(model, [LoglikelihoodRequest(context, tuple(range(17)))])


def multiple_choice_result(
    sums: list[list[float]], choices: list[list[str]], golds: list[int], name: str
) -> TaskResult:
    """score_task on hand-given log-likelihood sums (the scorer's output replaced)."""
    import scratchlm.evaluation.scoring as scoring

    flat = iter(value for row in sums for value in row)
    examples = [
        MultipleChoiceExample(str(number), tuple(Continuation("Q:", text) for text in texts), gold)
        for number, (texts, gold) in enumerate(zip(choices, golds, strict=True))
    ]

    def fake(model: object, requests: list[object], **kwargs: object) -> list[Loglikelihood]:
        return [Loglikelihood(next(flat), 1, False) for _ in requests]

    spec = TaskSpec(name, "multiple_choice", 0.25)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scoring, "score_loglikelihoods", fake)
        model = SimpleNamespace(config=SimpleNamespace(context_length=64))
        return score_task(model, FakeTokenizer(), spec, examples)  # type: ignore[arg-type]


class FakeTokenizer:
    eos_id = 0

    def encode(self, text: str) -> list[int]:
        return [ord(character) for character in text]


def test_acc_and_acc_norm_differ_where_length_matters() -> None:
    # Example 0: " a" is likeliest in sum (-2) but " bbbbbbbb" per character (-4/8 = -0.5 vs
    # -2/1): acc picks 0, acc_norm picks 1. Example 1: both pick choice 2.
    # The joining space is not counted: len("a") = 1, len("bbbbbbbb") = 8.
    result = multiple_choice_result(
        sums=[[-2.0, -4.0], [-9.0, -8.0, -1.0]],
        choices=[[" a", " bbbbbbbb"], [" x", " yy", " zzz"]],
        golds=[1, 2],
        name="hellaswag",
    )
    assert result.metrics == {"acc": 0.5, "acc_norm": 1.0}
    assert result.metric == "acc_norm" and result.value == 1.0
    # The joining space is not counted (lm-eval's len(choice)): -1/1 < -2.5/3 picks " bbb";
    # counting it, -1/2 > -2.5/4 would pick " a".
    spaced = multiple_choice_result(
        sums=[[-1.0, -2.5]], choices=[[" a", " bbb"]], golds=[1], name="winogrande"
    )
    assert spaced.metrics == {"acc": 0.0, "acc_norm": 1.0}
    assert spaced.metric == "acc"  # winogrande is centered by acc
    # Equal scores go to the first choice (numpy's argmax).
    tied = multiple_choice_result(
        sums=[[-2.0, -2.0]], choices=[[" a", " b"]], golds=[1], name="piqa"
    )
    assert tied.metrics == {"acc": 0.0, "acc_norm": 0.0}


def test_last_word_accuracy_and_perplexity_follow_lm_eval(
    bpe_tokenizer: Tokenizer,
) -> None:
    model = tiny_model("tiny", bpe_tokenizer)
    examples = [
        LastWordExample("0", "Once upon a time, there was a little cat named", " Tom"),
        LastWordExample("1", "Tom loved to play with his red", " ball"),
        LastWordExample("2", "They were happy and played all", " day"),
    ]
    result = score_task(
        model, bpe_tokenizer, TaskSpec("lambada_openai", "last_word", 0.0), examples
    )
    naive = [
        naive_loglikelihood(model, encode_pair(bpe_tokenizer, e.context, e.target))
        for e in examples
    ]
    mean = sum(score.logprob for score in naive) / len(naive)
    assert result.metrics["perplexity"] == pytest.approx(math.exp(-mean), rel=1e-5)
    assert result.metrics["acc"] == sum(score.is_greedy for score in naive) / 3
    assert result.metric == "acc"


def test_a_question_whose_answer_exceeds_the_context_is_skipped_and_counted(
    bpe_tokenizer: Tokenizer,
) -> None:
    model = tiny_model("tiny", bpe_tokenizer, context_length=32)
    long_answer = " " + " ".join(SAMPLE_TEXT.split()[:60])  # far more than 32 tokens
    fitting = [
        MultipleChoiceExample(
            str(index),
            (Continuation(context, " cat"), Continuation(context, " the red ball")),
            index % 2,
        )
        for index, context in enumerate(["Tom saw a", "Lily had a", "They found a"])
    ]
    too_long = MultipleChoiceExample(
        "long", (Continuation("Tom saw a", " dog"), Continuation("Tom saw a", long_answer)), 1
    )
    spec = TaskSpec("piqa", "multiple_choice", 0.5)
    stats = ScoringStats()
    result = score_task(
        model, bpe_tokenizer, spec, [fitting[0], too_long, *fitting[1:]], stats=stats
    )
    alone = score_task(model, bpe_tokenizer, spec, fitting)
    assert (result.examples, result.skipped, stats.skipped) == (3, 1, 1)
    assert result.metrics == alone.metrics and result.correct == alone.correct
    assert result.as_dict()["skipped"] == 1
    with pytest.raises(ScratchLMError, match="all 1 examples have an answer longer"):
        score_task(model, bpe_tokenizer, spec, [too_long])
    words = [LastWordExample("0", "Tom saw a", " cat"), LastWordExample("1", "Tom", long_answer)]
    last = score_task(model, bpe_tokenizer, TaskSpec("lambada", "last_word", 0.0), words)
    assert (last.examples, last.skipped) == (1, 1)


def spec_result(name: str, value: float, baseline: float, examples: int = 10) -> TaskResult:
    """A result with `value` as both acc and acc_norm, its first examples the correct ones."""
    spec = TaskSpec(name, "multiple_choice", baseline)
    correct = [index < round(value * examples) for index in range(examples)]
    return TaskResult(spec, examples, {"acc": value, "acc_norm": value}, correct)


def test_centered_aggregate_on_hand_numbers() -> None:
    results = [
        spec_result("hellaswag", 0.40, 0.25),  # (0.40 - 0.25) / 0.75 = 0.2
        spec_result("piqa", 0.75, 0.5),  # 0.5
        spec_result("lambada_openai", 0.30, 0.0),  # 0.3
        # MMLU: 3/10 + 9/20 correct = 12/30 = 0.4 pooled -> (0.4 - 0.25) / 0.75 = 0.2
        spec_result("mmlu_anatomy", 0.30, 0.25, examples=10),
        spec_result("mmlu_virology", 0.45, 0.25, examples=20),
    ]
    entries = aggregate_entries(results)
    assert [entry.name for entry in entries] == ["hellaswag", "piqa", "lambada_openai", "mmlu"]
    assert [entry.centered for entry in entries] == pytest.approx([0.2, 0.5, 0.3, 0.2])
    assert entries[0].metric == "acc_norm" and entries[3].metric == "acc"
    assert entries[3].examples == 30 and entries[3].subtasks == 2
    assert centered_aggregate(results) == pytest.approx((0.2 + 0.5 + 0.3 + 0.2) / 4)
    # below chance is negative
    assert centered_aggregate([spec_result("piqa", 0.25, 0.5)]) == pytest.approx(-0.5)


def chain_model(tokenizer: Tokenizer, transitions: dict[int, int]) -> GPT:
    """A model whose next token depends on the current token alone (attention and MLP outputs
    zeroed), and follows `transitions` greedily: a known generation without training."""
    torch.manual_seed(0)
    model = build_model(
        tiny_config(
            "tiny",
            vocab_size=tokenizer.vocab_size,
            d_model=64,
            tie_embeddings=False,
            context_length=128,
        )
    ).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                parameter.zero_()
        model.lm_head.weight.zero_()
        hidden = model.final_norm(model.token_embedding.weight)  # the state after each token
        for current, following in transitions.items():
            model.lm_head.weight[following] += 20 * hidden[current] / hidden[current].norm()
    return model


def test_gsm8k_generates_greedily_until_a_stop_and_compares_the_final_number(
    bpe_tokenizer: Tokenizer,
) -> None:
    from scratchlm.evaluation.examples import GenerativeExample

    prompt = "Question: Tom had 40 balls and found 2. How many?\nAnswer:"
    last = bpe_tokenizer.encode(prompt)[-1]
    space, four, two, newline = (bpe_tokenizer.encode(" 42\n")[i] for i in range(4))
    # ":" -> " " -> "4" -> "2" -> "\n" -> "\n" -> ...: " 42\n\n", where "\n\n" stops it.
    model = chain_model(
        bpe_tokenizer, {last: space, space: four, four: two, two: newline, newline: newline}
    )
    with torch.no_grad():  # the chain holds (checked by full forwards)
        ids = bpe_tokenizer.encode(prompt)
        for _ in range(6):
            logits = model(torch.tensor([ids]))[0, -1, : model.config.vocab_size]
            ids.append(int(logits.argmax()))
    assert bpe_tokenizer.decode(ids).endswith(" 42\n\n\n")
    examples = [
        GenerativeExample("right", prompt, "42"),
        GenerativeExample("wrong", prompt, "41"),
        GenerativeExample("reference format", prompt, "40 + 2 = 42\n#### 42"),
    ]
    stats = ScoringStats()
    result = score_task(
        model, bpe_tokenizer, TaskSpec("gsm8k", "generative", 0.0), examples, stats=stats
    )
    assert result.metrics == {"exact_match": pytest.approx(2 / 3)}
    assert result.metric == "exact_match"
    # Generation ended at the blank line: 5 tokens each, not 256.
    assert stats.generated_tokens == 3 * 5
