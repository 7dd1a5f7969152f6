"""lm-evaluation-harness against a real `scratchlm serve`: lm-eval's own `local-completions` model
(prompts sent as token ids, scored by echo + logprobs) must make the same per-example choices and
get the same accuracy as the in-process bridge on the same local tasks, and greedy generation
through the server must equal the bridge's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scratchlm.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from scratchlm.export.hf import tokenizer_config
from scratchlm.tokenizer import Tokenizer
from tests.server.conftest import RunningServer, start_server

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'scratchlm[eval]')")
for _module in ("aiohttp", "tenacity", "requests", "transformers"):
    pytest.importorskip(_module, reason="local-completions needs lm-eval[api] and transformers")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402

from scratchlm.evaluation.harness import ScratchLMHarness  # noqa: E402
from tests.evaluation.test_harness import local_tasks, tiny_model, write_task_data  # noqa: E402

TASKS = ["arc_easy", "winogrande"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer: Tokenizer) -> Checkpoint:
    root = tmp_path_factory.mktemp("harness-server")
    path = save_checkpoint(root / "ckpt", tiny_model(bpe_tokenizer), bpe_tokenizer)
    return load_checkpoint(path)


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory: pytest.TempPathFactory, checkpoint: Checkpoint) -> Path:
    """What local-completions loads with `tokenizer_backend=huggingface,tokenizer=DIR`: the two
    tokenizer files of `scratchlm export hf` (tokenizer.json as is, tokenizer_config.json)."""
    directory = tmp_path_factory.mktemp("harness-server") / "hf-tokenizer"
    directory.mkdir()
    tokenizer = checkpoint.tokenizer
    (directory / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
    settings = tokenizer_config(tokenizer, checkpoint.config.context_length)
    (directory / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def server(checkpoint: Checkpoint) -> Iterator[RunningServer]:
    running = start_server(checkpoint)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def task_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_task_data(tmp_path_factory.mktemp("harness-server") / "evals")


def completions_args(
    server: RunningServer, hf_tokenizer: Path, checkpoint: Checkpoint
) -> dict[str, Any]:
    return {
        "base_url": f"{server.base_url}/completions",
        "model": "tiny",
        "tokenizer_backend": "huggingface",
        "tokenizer": str(hf_tokenizer),
        # lm-eval keeps max_length - 1 prompt tokens; the server needs room for one new token.
        "max_length": checkpoint.config.context_length,
        "batch_size": 4,  # several prompts per request: our server takes a list of token lists
    }


def evaluate(model: Any, task_data: Path, model_args: dict[str, Any] | None = None) -> Any:
    results = simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=TASKS,
        task_manager=local_tasks(task_data),
        log_samples=True,
        bootstrap_iters=0,
        num_fewshot=0,
    )
    assert results is not None
    return results


@pytest.fixture(scope="module")
def through_server(
    server: RunningServer, hf_tokenizer: Path, checkpoint: Checkpoint, task_data: Path
) -> Any:
    model_args = completions_args(server, hf_tokenizer, checkpoint)
    return evaluate("local-completions", task_data, model_args)


@pytest.fixture(scope="module")
def in_process(checkpoint: Checkpoint, task_data: Path) -> Any:
    bridge = ScratchLMHarness(model=checkpoint.model, tokenizer=checkpoint.tokenizer, batch_size=4)
    return evaluate(bridge, task_data)


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda index: (values[index], -index))


@pytest.mark.parametrize("name", TASKS)
def test_local_completions_against_the_server_matches_the_bridge(
    name: str, through_server: Any, in_process: Any
) -> None:
    served = sorted(through_server["samples"][name], key=lambda sample: sample["doc_id"])
    local = sorted(in_process["samples"][name], key=lambda sample: sample["doc_id"])
    assert len(served) == len(local) > 0
    for theirs, ours in zip(served, local, strict=True):
        assert theirs["arguments"] == ours["arguments"]
        their_scores = [float(response[0]) for response in theirs["filtered_resps"]]
        our_scores = [float(response[0]) for response in ours["filtered_resps"]]
        assert their_scores == pytest.approx(our_scores, abs=1e-3)
        assert argmax(their_scores) == argmax(our_scores)
        assert [bool(r[1]) for r in theirs["filtered_resps"]] == [
            bool(r[1]) for r in ours["filtered_resps"]
        ]
        for metric in ("acc", "acc_norm"):
            assert theirs.get(metric) == ours.get(metric)
    for metric in ("acc,none", "acc_norm,none"):
        assert through_server["results"][name].get(metric) == in_process["results"][name].get(
            metric
        )


def test_greedy_generation_through_the_server_matches_the_bridge(
    server: RunningServer, hf_tokenizer: Path, checkpoint: Checkpoint
) -> None:
    client = get_model("local-completions").create_from_arg_obj(
        completions_args(server, hf_tokenizer, checkpoint) | {"batch_size": 1}
    )
    bridge = ScratchLMHarness(model=checkpoint.model, tokenizer=checkpoint.tokenizer)
    cases = [
        ("Once upon a time", {"until": ["\n\n"], "max_gen_toks": 10}),
        ("Tom was sad. His friend", {"until": ["ball"], "max_gen_toks": 16, "do_sample": False}),
    ]
    requests = [
        Instance(request_type="generate_until", doc={}, arguments=case, idx=0) for case in cases
    ]
    # Each model takes the gen_kwargs as its own copy (local-completions pops from them).
    served = client.generate_until([Instance(**vars_of(r)) for r in requests])
    local = bridge.generate_until(requests)
    assert served == local
    assert any(text for text in local)


def vars_of(request: Instance) -> dict[str, Any]:
    context, gen_kwargs = request.args
    return {
        "request_type": request.request_type,
        "doc": request.doc,
        "arguments": (context, dict(gen_kwargs)),
        "idx": request.idx,
    }
