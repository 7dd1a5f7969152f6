"""The Python API (`import scratchlm`): every code example of docs/python-api.md runs, in order,
in a fresh directory; `import scratchlm` does not import torch; settings and sampling arguments
are checked like the CLI's."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import scratchlm
from scratchlm.chat_template import Message, render
from scratchlm.checkpoint import save_checkpoint
from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.perplexity import evaluate_text
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import SamplingSettings
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC = REPO_ROOT / "docs" / "python-api.md"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)


def test_every_example_in_the_doc_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__doc_example__"}
    output = io.StringIO()
    timings = []
    for index, block in enumerate(blocks):
        started = time.perf_counter()
        with contextlib.redirect_stdout(output):
            try:
                exec(compile(block, f"{DOC.name} block {index + 1}", "exec"), namespace)
            except Exception as error:
                raise AssertionError(
                    f"{DOC.name} block {index + 1} failed: {error!r}\n{block}"
                ) from error
        timings.append(round(time.perf_counter() - started, 1))
    print("seconds per block:", timings)
    printed = output.getvalue()
    # what the doc says the examples print
    assert "0.0003 ['n_layer=2'] 10" in printed
    assert "did you mean 'lr'?" in printed
    assert "LanguageModel('runs/tiny/best'" in printed
    assert "nats/token" in printed and "bits/byte" in printed
    assert "temprature" in printed and "did you mean 'temperature'" in printed
    assert "top_p must be in (0, 1], got 1.5" in printed


def test_importing_scratchlm_does_not_import_torch() -> None:
    code = (
        "import sys, scratchlm; "
        "heavy = [m for m in ('torch', 'numpy', 'tokenizers', 'yaml') if m in sys.modules]; "
        "print(heavy, scratchlm.__version__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split("]")[0] == "[", result.stdout
    assert callable(scratchlm.load) and callable(scratchlm.train)
    # `scratchlm.finetune` names both the API function and the subpackage: importing a module
    # of the package rebinds the name to the package, which must stay callable
    from scratchlm.finetune import lora

    assert callable(scratchlm.finetune) and scratchlm.finetune.lora is lora


def test_settings_are_typed_like_the_cli_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "run.yaml"
    config_file.write_text("preset: tiny\nlr: 3e-4\nmax_steps: 100\nset: {n_layer: 2}\n")
    settings = scratchlm.train_config(config=config_file, max_steps="20", out=tmp_path / "run")
    # the file < the keyword arguments; strings typed as the fields want
    assert settings.lr == 3e-4 and settings.max_steps == 20
    assert settings.set == ["n_layer=2"] and settings.out == str(tmp_path / "run")
    with pytest.raises(ScratchLMError, match=r"scratchlm.train: max_steps must be an integer"):
        scratchlm.train_config(max_steps="ten")
    with pytest.raises(ScratchLMError, match=r"did you mean 'max_steps'"):
        scratchlm.train_config(max_step=3)
    with pytest.raises(ScratchLMError, match=r"--batch-size must be >= 1"):
        scratchlm.train_config(batch_size=0)


def test_finetune_refuses_model_settings_before_loading_anything(tmp_path: Path) -> None:
    with pytest.raises(ScratchLMError, match=r"unknown setting 'preset'"):
        scratchlm.finetune(tmp_path, data="x.jsonl", preset="tiny")
    with pytest.raises(ScratchLMError, match=r"finetune needs data="):
        scratchlm.finetune(tmp_path, max_steps=1)


def test_sampling_defaults_are_the_cli_generate_defaults() -> None:
    from scratchlm.api import sampling_settings
    from scratchlm.cli.options import SAMPLING_DEFAULTS

    settings, controls = sampling_settings({})
    for name, value in SAMPLING_DEFAULTS.items():
        assert (controls[name] if name in controls else getattr(settings, name)) == value
    assert controls["stop"] == ()
    with pytest.raises(ScratchLMError, match=r"unknown sampling setting 'topk'.*'top_k'"):
        sampling_settings({"topk": 5})


@pytest.fixture
def checkpoint(tmp_path: Path, bpe_tokenizer: Tokenizer) -> Path:
    torch.manual_seed(0)
    config = tiny_config("tiny", vocab_size=bpe_tokenizer.vocab_size, context_length=64)
    return save_checkpoint(tmp_path / "model", build_model(config), bpe_tokenizer)


def test_the_model_object_is_the_engine_the_template_and_the_evaluation(checkpoint: Path) -> None:
    lm = scratchlm.load(checkpoint, "cpu")
    assert lm.path == checkpoint and lm.tokenizer.vocab_size == lm.config.vocab_size
    engine = Engine(lm.model)
    greedy = SamplingSettings(temperature=0.0)
    eos = frozenset({lm.tokenizer.eos_id})

    prompt_ids = lm.tokenizer.encode("Once upon a time")
    expected = list(engine.generate(prompt_ids, max_new_tokens=12, sampling=greedy, stop_ids=eos))
    text = lm.generate("Once upon a time", temperature=0, max_new_tokens=12)
    assert text == lm.tokenizer.decode(expected)
    assert "".join(lm.stream("Once upon a time", temperature=0, max_new_tokens=12)) == text
    if len(text) > 2:  # a stop string ends the text before it
        assert (
            lm.generate("Once upon a time", temperature=0, max_new_tokens=12, stop=text[2:])
            == (text[:2])
        )

    messages: list[Message] = [{"role": "user", "content": "Hello there"}]
    ids, _ = render(messages, lm.tokenizer, add_generation_prompt=True)
    reply_ids = list(engine.generate(ids, max_new_tokens=10, sampling=greedy))
    reply = lm.chat(messages, temperature=0, max_new_tokens=10)
    assert lm.tokenizer.decode(reply_ids).startswith(reply)  # cut at a stop token, if any

    text = "Once upon a time, there was a little cat named Tom."
    result = evaluate_text(lm.model, lm.tokenizer, [text], device=lm.device)
    assert lm.score(text) == (result.loss, result.bits_per_byte)
    with pytest.raises(ScratchLMError, match="non-empty"):
        lm.score("")


@pytest.mark.parametrize(("given", "expected"), [(None, "1000"), ("5", "5")])
def test_import_sets_a_short_openmp_spin_unless_the_user_set_one(
    given: str | None, expected: str
) -> None:
    """Importing scratchlm (before torch) shortens libgomp's spin-wait; a user's value wins."""
    environment = {key: value for key, value in os.environ.items() if key != "GOMP_SPINCOUNT"}
    if given is not None:
        environment["GOMP_SPINCOUNT"] = given
    shown = subprocess.run(
        [sys.executable, "-c", "import os, scratchlm; print(os.environ['GOMP_SPINCOUNT'])"],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert shown == expected
