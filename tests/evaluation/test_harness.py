"""The lm-evaluation-harness bridge against references: lm-eval's own `simple_evaluate` over the
local task YAMLs must make the same per-example choices and the same acc / acc_norm as the
built-in scorer on the same files; `loglikelihood_rolling` must equal a naive windowed forward and
`generate_until` a naive greedy loop (one full forward per token, no cache)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from scratchlm.checkpoint import save_checkpoint
from scratchlm.evaluation.examples import MultipleChoiceExample
from scratchlm.evaluation.perplexity import evaluate_text, text_windows
from scratchlm.evaluation.scoring import (
    TaskResult,
    encode_pair,
    run_benchmarks,
    score_loglikelihoods,
)
from scratchlm.evaluation.tasks import load_task
from scratchlm.model import GPT, build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import REPO_ROOT, SAMPLE_TEXT, tiny_config

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'scratchlm[eval]')")

from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
from lm_eval.tasks import TaskManager

from scratchlm.evaluation.harness import ScratchLMHarness, generation_settings
from scratchlm.evaluation.harness_tasks import DIRECTORY

CONTEXT = 64  # short enough that the longest few-shot prompts are left-truncated
TASKS = ("arc_easy", "hellaswag", "winogrande", "piqa")
WORDS = SAMPLE_TEXT.replace(".", "").replace(",", "").split()


def words(seed: int, count: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(count))


# --- task files in the upstream formats, written by the test -----------------------------------


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def arc(i: int) -> dict[str, Any]:
    labels = ["A", "B", "C", "D"] if i % 3 else ["1", "2", "3"]  # some ARC items are numeric
    return {
        "id": f"Q{i}",
        "question": f"Why did {words(i, 3 + i % 9)}?",
        "choices": {
            "text": [words(i + k, 1 + (i + k) % 4) for k in range(len(labels))],
            "label": labels,
        },
        "answerKey": labels[i % len(labels)],
    }


def write_task_data(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "arc_easy_test.jsonl", [arc(i) for i in range(8)])
    write_jsonl(root / "arc_easy_train.jsonl", [arc(100 + i) for i in range(6)])
    hellaswag = [
        {
            "ind": i,
            "activity_label": "Playing ball" if i % 2 else "Home and Garden",
            "ctx_a": f"[header] {words(i, 5)}.",
            "ctx_b": words(i + 1, 2),
            "label": i % 4,
            "endings": [f"{words(i + k, 2 + k)} [step] {words(k, 1)}." for k in range(4)],
        }
        for i in range(6)
    ]
    write_jsonl(root / "hellaswag_val.jsonl", hellaswag)
    winogrande = [
        {
            "qID": f"W{i}",
            "sentence": f"{words(i, 4)} than Lily so _ {words(i + 2, 3 + i % 3)}.",
            "option1": "Tom",
            "option2": "the cat",
            "answer": str(1 + i % 2),
        }
        for i in range(6)
    ]
    write_jsonl(root / "winogrande_dev.jsonl", winogrande)
    piqa = [
        {"goal": f"To {words(i, 3)},", "sol1": words(i + 1, 4), "sol2": words(i + 5, 2)}
        for i in range(5)
    ]
    write_jsonl(root / "piqa_valid.jsonl", piqa)
    (root / "piqa_valid-labels.lst").write_text("".join(f"{i % 2}\n" for i in range(5)))
    lambada = [
        {"text": f"{words(i, 6 + 5 * i)}.\n\n{words(i + 3, 4)} {WORDS[i]}"} for i in range(4)
    ]
    write_jsonl(root / "lambada_openai_test.jsonl", lambada)
    return root


def tiny_model(tokenizer: Tokenizer) -> GPT:
    torch.manual_seed(0)
    model = build_model(
        tiny_config("tiny", vocab_size=tokenizer.vocab_size, context_length=CONTEXT)
    )
    # Larger weights than the init: distinct, confident choices that expose any mismatch.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def task_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_task_data(tmp_path_factory.mktemp("harness") / "evals")


@pytest.fixture(scope="module")
def model(bpe_tokenizer: Tokenizer) -> GPT:
    return tiny_model(bpe_tokenizer)


@pytest.fixture(scope="module")
def bridge(model: GPT, bpe_tokenizer: Tokenizer) -> ScratchLMHarness:
    return ScratchLMHarness(model=model, tokenizer=bpe_tokenizer, batch_size=3)


def local_tasks(task_data: Path) -> TaskManager:
    return TaskManager(
        include_path=str(DIRECTORY), include_defaults=False, metadata={"task_data": str(task_data)}
    )


def harness(bridge: ScratchLMHarness, task_data: Path, tasks: list[str], shots: int) -> Any:
    results = simple_evaluate(
        model=bridge,
        tasks=tasks,
        num_fewshot=shots,
        task_manager=local_tasks(task_data),
        log_samples=True,
        bootstrap_iters=0,
    )
    assert results is not None
    return results


@pytest.fixture(scope="module")
def zero_shot(bridge: ScratchLMHarness, task_data: Path) -> Any:
    return harness(bridge, task_data, list(TASKS), 0)  # one lm-eval run for all tasks


@pytest.fixture(scope="module")
def two_shot(bridge: ScratchLMHarness, task_data: Path) -> Any:
    return harness(bridge, task_data, ["arc_easy"], 2)


def builtin(
    model: GPT, tokenizer: Tokenizer, task_data: Path, name: str, shots: int
) -> tuple[list[MultipleChoiceExample], TaskResult, list[list[float]]]:
    """The built-in scorer's examples, its result and each choice's summed log-probability."""
    spec, examples = load_task(name, task_data=task_data, num_fewshot=shots)
    result = run_benchmarks(model, tokenizer, [(spec, examples)], batch_size=3).results[0]
    choices = [example for example in examples if isinstance(example, MultipleChoiceExample)]
    requests = [
        encode_pair(tokenizer, choice.context, choice.continuation)
        for example in choices
        for choice in example.choices
    ]
    scores = iter(score_loglikelihoods(model, requests, batch_size=3))
    logprobs = [[next(scores).logprob for _ in example.choices] for example in choices]
    return choices, result, logprobs


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda index: (values[index], -index))


def assert_same_as_builtin(
    results: Any, name: str, model: GPT, tokenizer: Tokenizer, task_data: Path, shots: int
) -> None:
    examples, result, logprobs = builtin(model, tokenizer, task_data, name, shots)
    samples = sorted(results["samples"][name], key=lambda sample: sample["doc_id"])
    assert len(samples) == len(examples) > 0
    norm_correct = []
    for sample, example, ours in zip(samples, examples, logprobs, strict=True):
        # The same prompt text for every choice (formatting, few-shot shots included).
        pairs = [(choice.context, choice.continuation) for choice in example.choices]
        assert [tuple(arguments) for arguments in sample["arguments"]] == pairs
        if isinstance(sample["target"], int):  # (Winogrande's target is the shared rest)
            assert sample["target"] == example.gold
        theirs = [float(response[0]) for response in sample["filtered_resps"]]
        assert theirs == pytest.approx(ours, abs=1e-4)
        assert argmax(theirs) == argmax(ours)  # the same choice
        assert sample["acc"] == float(argmax(ours) == example.gold)
        if "acc_norm" in sample:
            lengths = [len(choice.continuation.removeprefix(" ")) for choice in example.choices]
            normalized = [total / length for total, length in zip(ours, lengths, strict=True)]
            assert sample["acc_norm"] == float(argmax(normalized) == example.gold)
            norm_correct.append(bool(sample["acc_norm"]))
    metrics = results["results"][name]
    assert metrics["acc,none"] == pytest.approx(result.metrics["acc"], abs=1e-12)
    if "acc_norm,none" in metrics:
        assert metrics["acc_norm,none"] == pytest.approx(result.metrics["acc_norm"], abs=1e-12)
        assert result.metrics["acc_norm"] == pytest.approx(sum(norm_correct) / len(norm_correct))


@pytest.mark.parametrize("name", TASKS)
def test_lm_eval_through_the_bridge_matches_the_builtin_scorer(
    name: str, zero_shot: Any, model: GPT, bpe_tokenizer: Tokenizer, task_data: Path
) -> None:
    assert_same_as_builtin(zero_shot, name, model, bpe_tokenizer, task_data, 0)


def test_few_shot_prompts_and_choices_match_the_builtin_scorer(
    two_shot: Any, model: GPT, bpe_tokenizer: Tokenizer, task_data: Path
) -> None:
    # Shots drawn by lm-eval's sampler (seed 1234) equal the built-in loader's; the prompts are
    # longer than the context, so both left-truncate the same way.
    assert_same_as_builtin(two_shot, "arc_easy", model, bpe_tokenizer, task_data, 2)
    contexts = [sample["arguments"][0][0] for sample in two_shot["samples"]["arc_easy"]]
    assert all(context.count("Question:") == 3 for context in contexts)
    assert any(len(bpe_tokenizer.encode(context)) > CONTEXT for context in contexts)


# --- loglikelihood_rolling and generate_until against naive references -------------------------


def naive_rolling(model: GPT, tokenizer: Tokenizer, text: str) -> float:
    """Every token predicted once, in chunks of up to `context` tokens; each chunk's forward pass
    reads the `context` tokens before its last target (fewer at the start: from the EOS)."""
    ids = [tokenizer.eos_id, *tokenizer.encode(text)]
    total, done = 0.0, 1  # ids[done:] are still to predict
    while done < len(ids):
        end = min(len(ids), done + CONTEXT)  # predict ids[done:end]
        start = max(0, end - 1 - CONTEXT)
        with torch.no_grad():
            logits = model(torch.tensor([ids[start : end - 1]]))[0, :, : model.config.vocab_size]
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        for position in range(done, end):
            total += float(logprobs[position - 1 - start, ids[position]])
        done = end
    return total


def rolling_request(text: str) -> Instance:
    return Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)


def test_loglikelihood_rolling_matches_a_naive_windowed_forward(
    bridge: ScratchLMHarness, model: GPT, bpe_tokenizer: Tokenizer
) -> None:
    texts = [SAMPLE_TEXT * 3, "Tom", SAMPLE_TEXT[:150], ""]
    lengths = [len(bpe_tokenizer.encode(text)) for text in texts]
    assert lengths[0] > 2 * CONTEXT and lengths[0] % CONTEXT  # several windows, a partial last
    got = bridge.loglikelihood_rolling([rolling_request(text) for text in texts])
    expected = [naive_rolling(model, bpe_tokenizer, text) for text in texts]
    assert got == pytest.approx(expected, abs=1e-3)
    assert got[-1] == 0.0
    # The disjoint windows cover each token once.
    windows = bridge.rolling_windows(texts[0])
    assert sum(len(window.continuation_ids) for window in windows) == lengths[0]


def test_loglikelihood_rolling_equals_perplexity_windows_on_whole_windows(
    bridge: ScratchLMHarness, model: GPT, bpe_tokenizer: Tokenizer
) -> None:
    # A document of exactly 2 * context tokens: lm-eval's windows are the perplexity module's
    # non-overlapping `text_windows` over [EOS] + tokens, so the rolling log-likelihood is
    # -loss * tokens of `evaluate_text` (`scratchlm eval --data`), both over the real vocabulary.
    ids = (bpe_tokenizer.encode(SAMPLE_TEXT * 4))[: 2 * CONTEXT]
    text = bpe_tokenizer.decode(ids)
    assert bpe_tokenizer.encode(text) == ids
    expected, predicted = 0.0, 0
    for inputs, targets in text_windows([bpe_tokenizer.eos_id, *ids], CONTEXT, 4):
        with torch.no_grad():
            logits = model(inputs)[..., : model.config.vocab_size].double()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])
        expected += float(logprobs.sum())
        predicted += targets.numel()
    got = bridge.loglikelihood_rolling([rolling_request(text)])[0]
    assert predicted == len(ids)
    assert got == pytest.approx(expected, abs=1e-3)
    # evaluate_text adds an EOS after the document: a third, one-token window (the last id at
    # position 0) predicts it.
    whole = evaluate_text(model, bpe_tokenizer, [text], device=torch.device("cpu"))
    assert whole.tokens == len(ids) + 1
    with torch.no_grad():
        last = model(torch.tensor([ids[-1:]]))[0, -1, : model.config.vocab_size].double()
    eos = float(torch.log_softmax(last, dim=-1)[bpe_tokenizer.eos_id])
    assert -whole.loss * whole.tokens == pytest.approx(expected + eos, abs=1e-3)


def naive_greedy(
    model: GPT, tokenizer: Tokenizer, prompt: str, until: list[str], count: int
) -> str:
    ids = tokenizer.encode(prompt)
    start = len(ids)
    for _ in range(count):
        with torch.no_grad():
            logits = model(torch.tensor([ids[-(CONTEXT - 1) :]]))[0, -1, : model.config.vocab_size]
        token = int(logits.argmax())
        if token == tokenizer.eos_id:
            break
        ids.append(token)
        text = tokenizer.decode(ids[start:], skip_special=True)
        cuts = [text.find(stop) for stop in until if stop in text]
        if cuts:
            return text[: min(cuts)]
    return tokenizer.decode(ids[start:], skip_special=True)


def test_generate_until_matches_a_naive_greedy_loop(
    bridge: ScratchLMHarness, model: GPT, bpe_tokenizer: Tokenizer
) -> None:
    prompts = ["Once upon a time", "Tom was sad. His friend", "The ball"]
    # A stop string the model does produce (the text of its own greedy continuation), and none.
    free = naive_greedy(model, bpe_tokenizer, prompts[0], [], 12)
    stop = free[3:6]
    assert stop and stop in free
    # (prompt, the stop strings it means, max new tokens, lm-eval's gen_kwargs)
    cases: list[tuple[str, list[str], int, dict[str, Any]]] = [
        (prompts[0], [stop], 12, {"until": [stop], "max_gen_toks": 12}),
        (prompts[1], ["\n\n"], 8, {"until": "\n\n", "max_gen_toks": 8, "do_sample": False}),
        (prompts[2], [], 5, {"until": [], "max_gen_toks": 5, "temperature": 0.0}),
    ]
    requests = [
        Instance(request_type="generate_until", doc={}, arguments=(prompt, kwargs), idx=0)
        for prompt, _, _, kwargs in cases
    ]
    got = bridge.generate_until(requests)
    expected = [
        naive_greedy(model, bpe_tokenizer, prompt, until, count)
        for prompt, until, count, _ in cases
    ]
    assert got == expected
    assert got[0] == free[: free.find(stop)]


def test_generation_settings_follow_lm_eval_defaults() -> None:
    stops, count, sampling = generation_settings({"until": "Q:"})
    assert (stops, count, sampling.greedy) == (("Q:",), 256, True)
    _, _, sampling = generation_settings({"temperature": 0.7})  # no do_sample: greedy (HF)
    assert sampling.greedy
    _, _, sampling = generation_settings({"do_sample": True, "top_p": 0.9})
    assert (sampling.temperature, sampling.top_p) == (1.0, 0.9)
    _, _, sampling = generation_settings({"do_sample": "true", "temperature": 0.0})
    assert sampling.greedy


# --- construction, registration and the command line ------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(
    tmp_path_factory: pytest.TempPathFactory, model: GPT, bpe_tokenizer: Tokenizer
) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("harness") / "ckpt", model, bpe_tokenizer)


def test_registered_and_built_from_model_args(checkpoint: Path, bridge: ScratchLMHarness) -> None:
    cls = get_model("scratchlm")
    assert cls is ScratchLMHarness
    assert get_model("dummy").__name__ == "DummyLM"  # lm-eval's own models stay registered
    loaded = cls.create_from_arg_string(
        f"pretrained={checkpoint},dtype=float32,skip_checksums=True", {"batch_size": 2}
    )
    assert (loaded.batch_size, loaded.max_length) == (2, CONTEXT)
    request = Instance(request_type="loglikelihood", doc={}, arguments=("Tom was", " sad."), idx=0)
    [(theirs, theirs_greedy)] = loaded.loglikelihood([request])
    [(ours, ours_greedy)] = bridge.loglikelihood([request])
    assert (theirs, theirs_greedy) == (pytest.approx(ours, abs=1e-5), ours_greedy)


def test_cli_harness_json_matches_the_builtin_scorer(
    checkpoint: Path,
    task_data: Path,
    model: GPT,
    bpe_tokenizer: Tokenizer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from scratchlm.cli import main

    code = main(
        ["eval", "-m", str(checkpoint), "--harness", "winogrande,lambada", "--task-data",
         str(task_data), "--batch-size", "2", "--device", "cpu", "--json"]
    )  # fmt: skip
    assert code in (0, None)
    values = json.loads(capsys.readouterr().out)  # nothing of lm-eval's own prints on stdout
    tasks = [load_task(name, task_data=task_data) for name in ("winogrande", "lambada")]
    report = run_benchmarks(model, bpe_tokenizer, tasks, batch_size=3)
    for name, result in zip(("winogrande", "lambada_openai"), report.results, strict=True):
        metrics = values["tasks"][name]["metrics"]
        assert metrics["acc"] == pytest.approx(result.metrics["acc"])
        assert "acc_stderr" in metrics
        assert values["tasks"][name]["examples"] == result.examples
    # LAMBADA's perplexity: lm-eval's exp(-mean of per-document log-likelihoods), as ours.
    perplexity = values["tasks"]["lambada_openai"]["metrics"]["perplexity"]
    assert perplexity == pytest.approx(report.results[1].metrics["perplexity"], rel=1e-4)


def test_cli_harness_user_errors(
    checkpoint: Path, task_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scratchlm.cli import main

    base = ["eval", "-m", str(checkpoint), "--task-data", str(task_data)]
    assert main([*base, "--harness", "mmlu"]) == 2
    assert "local lm-eval tasks" in capsys.readouterr().err
    assert main([*base, "--harness", "boolq"]) == 2  # its file is missing: the built-in message
    assert "boolq_dev.jsonl" in capsys.readouterr().err
    assert main([*base, "--harness", "arc_easy", "--tasks", "arc_easy"]) == 2
    assert "--harness" in capsys.readouterr().err


def test_import_scratchlm_never_imports_lm_eval_and_a_missing_lm_eval_is_one_line() -> None:
    script = (
        "import sys\n"
        "import scratchlm, scratchlm.cli, scratchlm.cli.harness, scratchlm.evaluation.harness_tasks\n"
        "assert 'lm_eval' not in sys.modules, 'imported lm_eval'\n"
        "sys.modules['lm_eval'] = None\n"
        "from scratchlm.cli import main\n"
        "sys.exit(main(['eval', '-m', 'nowhere', '--harness', 'arc_easy']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'scratchlm[eval]'" in lines[0]
