"""The model card (`README.md`) every Hugging Face export carries.

YAML metadata first (what the Hub indexes: library, license, tags, pipeline), then what a reader
needs to trust and use the model: the architecture in ModelConfig terms, the tokenizer, how it was
trained (steps, tokens, data), the evaluation results the run recorded, the chat template and a
transformers snippet. Training facts come from the checkpoint's config.json and, when the
checkpoint lies in a run directory, from that run's run_config.json / metrics.jsonl / eval/*.json,
read by `scratchlm.report` (one reader for the report and the card).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from scratchlm.checkpoint import Checkpoint
from scratchlm.config import ModelConfig, format_count
from scratchlm.errors import ScratchLMError
from scratchlm.report.content import (
    BENCHMARK_COLUMNS,
    format_value,
    hand_evals,
    training_benchmarks,
)
from scratchlm.report.markdown import table
from scratchlm.report.run import METRICS_FILE, RunData, load_run, summary

MODEL_CARD_FILE = "README.md"
DEFAULT_LICENSE = "other"
# The Hub's license field takes an SPDX-like lowercase id (apache-2.0, mit, cc-by-4.0, other).
LICENSE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")


def check_license(license: str) -> str:
    if not LICENSE_PATTERN.match(license):
        raise ScratchLMError(
            f"--license {license!r} is not a Hugging Face license id; use a lowercase id such "
            "as apache-2.0, mit, cc-by-4.0 or other"
        )
    return license


def find_run(checkpoint_dir: Path) -> RunData | None:
    """The run directory a checkpoint was saved in (RUN/best, RUN/checkpoints/step_N), if any."""
    for candidate in (checkpoint_dir, checkpoint_dir.parent, checkpoint_dir.parent.parent):
        if (candidate / METRICS_FILE).is_file():
            try:
                return load_run(candidate)
            except ScratchLMError:
                return None
    return None


def _yaml_string(value: str) -> str:
    # A JSON string is a valid YAML scalar, quoted and escaped.
    return json.dumps(value, ensure_ascii=False)


def metadata_block(*, custom: bool, license: str, layout: str) -> str:
    tags = ["scratchlm", layout, "text-generation", "from-scratch"]
    if custom:
        tags.append("custom_code")
    lines = [
        "---",
        # The custom layout runs our modeling code, so it is not a plain transformers model.
        f"library_name: {'scratchlm' if custom else 'transformers'}",
        f"license: {_yaml_string(license)}",
        "tags:",
        *(f"- {_yaml_string(tag)}" for tag in tags),
        "pipeline_tag: text-generation",
        "---",
    ]
    return "\n".join(lines)


def architecture_rows(
    config: ModelConfig, hf_config: dict[str, Any], layout: str
) -> list[list[str]]:
    assert config.n_kv_head is not None and config.head_dim is not None
    attention = (
        "MHA" if config.n_kv_head == config.n_head else ("MQA" if config.n_kv_head == 1 else "GQA")
    )
    positions = (
        f"rotary (RoPE, theta {config.rope_theta:g})" if config.position == "rope" else "learned"
    )
    mlp = config.mlp + (
        f" (slope {config.leaky_relu_slope:g})" if config.mlp == "leaky_relu" else ""
    )
    return [
        ["layout", f"{layout} ({hf_config['architectures'][0]})"],
        ["parameters", f"{config.n_params:,} ({format_count(config.n_params)})"],
        ["layers", str(config.n_layer)],
        ["model width (d_model)", str(config.d_model)],
        [
            "attention",
            f"{attention}: {config.n_head} query heads, {config.n_kv_head} key/value heads, "
            f"head_dim {config.head_dim}",
        ],
        ["MLP", f"{mlp}, hidden {config.ffn_hidden}"],
        ["norm", f"{config.norm} (eps {config.norm_eps:g})"],
        ["positions", positions],
        ["QK-norm", format_value(config.qk_norm)],
        ["embedding norm", format_value(config.embedding_norm)],
        ["biases", format_value(config.bias)],
        ["tied input/output embeddings", format_value(config.tie_embeddings)],
        ["logit soft-capping", format_value(config.logit_softcap, none="off")],
        ["context length", f"{config.context_length:,} tokens"],
        ["weights stored as", str(hf_config.get("dtype", "float32"))],
    ]


def post_training_rows(metadata: dict[str, Any], training: dict[str, Any]) -> list[list[str]]:
    """What a dpo or rl stage did: its settings and the held-out measures of this checkpoint's
    evaluation (`training["val"]`)."""
    val = training.get("val")
    measured: dict[str, Any] = val if isinstance(val, dict) else {}
    rows: list[list[str]] = []
    dpo, rl = metadata.get("dpo"), metadata.get("rl")
    if isinstance(dpo, dict):
        rows.append(["preference tuning", ", ".join(f"{k} {v}" for k, v in dpo.items())])
        names = {
            "val_preference_accuracy": "held-out preference accuracy (summed log-probs)",
            "val_preference_accuracy_per_token": "held-out preference accuracy (per token)",
            "val_reward_accuracy": "held-out reward accuracy",
            "val_reward_margin": "held-out reward margin",
        }
    elif isinstance(rl, dict):
        shown = ("task", "reward", "group_size", "prompts_per_step", "kl")
        rows.append(
            [
                "RL from verifiable rewards",
                ", ".join(f"{k} {rl[k] if rl.get(k) is not None else 'default'}" for k in shown),
            ]
        )
        names = {
            "pass@1": "held-out pass@1 (greedy)",
            "pass@k": "held-out pass@k",
            "reward_mean": "held-out mean reward",
        }
    else:
        return rows
    rows += [
        [label, format_value(measured[key])] for key, label in names.items() if key in measured
    ]
    return rows


def training_section(checkpoint: Checkpoint, run: RunData | None) -> list[str]:
    training = checkpoint.metadata.get("training")
    training = training if isinstance(training, dict) else {}
    run_config = training.get("run_config")
    settings = run.settings if run is not None and run.settings else run_config
    settings = settings if isinstance(settings, dict) else {}
    finished = summary(run) if run is not None else {}
    finetune = checkpoint.metadata.get("finetune")
    finetune = finetune if isinstance(finetune, dict) else {}
    rows = [
        ["optimizer steps", format_value(training.get("step", finished.get("steps")))],
        ["tokens seen", format_value(training.get("tokens", finished.get("tokens")))],
        ["training data", format_value(settings.get("data"))],
        ["validation data", format_value(settings.get("val_data"), none="held out from the data")],
    ]
    if finetune:
        rows += [
            ["fine-tuned from", format_value(finetune.get("base"))],
            ["fine-tuning data", format_value(finetune.get("data"))],
        ]
    for key, label in (("imported_from", "imported from"), ("merged_from", "merged from")):
        if key in training:
            rows.append([label, format_value(json.dumps(training[key]))])
    best = training.get("best_val_loss", finished.get("best_val_loss"))
    rows += post_training_rows(checkpoint.metadata, training)
    if "rl" in checkpoint.metadata:
        rows.append(["best held-out 1 - pass@1", format_value(best)])
    elif "dpo" in checkpoint.metadata:
        rows.append(["best held-out preference loss", format_value(best)])
    else:
        rows.append(["best validation loss", format_value(best)])
    perplexity = finished.get("best_val_perplexity")
    if isinstance(perplexity, float) and math.isfinite(perplexity):
        rows.append(["best validation perplexity", format_value(perplexity)])
    source = (
        f"the checkpoint's config.json and its run directory `{run.name}`"
        if run is not None
        else "the checkpoint's config.json (no run directory next to it)"
    )
    return ["## Training", "", f"Recorded in {source}.", "", table(("what", "value"), rows)]


def evaluation_section(run: RunData | None) -> list[str]:
    lines = ["## Evaluation", ""]
    scored = training_benchmarks(run) if run is not None else None
    saved = hand_evals(run) if run is not None else []
    if scored is None and not saved:
        return [*lines, "No benchmark results were recorded with this run."]
    if scored is not None:
        lines += [
            f"Scored during training (`--eval-tasks`), step {scored.step}:",
            "",
            table(BENCHMARK_COLUMNS, scored.rows),
            "",
        ]
    for result in saved:
        lines += [
            f"`scratchlm eval --tasks` ({result.file}: {result.note}):",
            "",
            table(BENCHMARK_COLUMNS, result.rows),
            "",
        ]
    return lines[:-1]


def usage_snippet(model_id: str, custom: bool) -> str:
    remote = ", trust_remote_code=True" if custom else ""
    return "\n".join(
        [
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f"model_id = {model_id!r}",
            "tokenizer = AutoTokenizer.from_pretrained(model_id)",
            f"model = AutoModelForCausalLM.from_pretrained(model_id{remote})",
            'messages = [{"role": "user", "content": "Tell me a short story."}]',
            "inputs = tokenizer.apply_chat_template(",
            '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True',
            ")",
            "output = model.generate(**inputs, max_new_tokens=50, do_sample=False)",
            'prompt_length = inputs["input_ids"].shape[1]',
            "print(tokenizer.decode(output[0][prompt_length:], skip_special_tokens=True))",
            "```",
        ]
    )


def model_card(
    checkpoint: Checkpoint,
    *,
    hf_config: dict[str, Any],
    layout: str,
    custom: bool,
    license: str,
    model_id: str,
) -> str:
    """README.md for an export of `checkpoint` in `layout` (`hf_config`: its config.json);
    `model_id` is what the usage snippet loads (the Hub id when pushed, else the folder)."""
    config, tokenizer = checkpoint.config, checkpoint.tokenizer
    run = find_run(checkpoint.path)
    title = model_id.rsplit("/", 1)[-1] or config.name
    intro = (
        f"A {format_count(config.n_params)}-parameter language model trained from scratch with "
        f"scratchlm, a from-scratch GPT toolkit in PyTorch (ModelConfig `{config.name}`), exported as "
        f"`{hf_config['architectures'][0]}`."
    )
    if custom:
        intro += (
            " No standard transformers architecture computes it exactly, so the repository "
            "carries its own modeling code (`configuration_scratchlm.py`, "
            "`modeling_scratchlm.py`): load it with `trust_remote_code=True`, after reading that "
            "code."
        )
    lines = [metadata_block(custom=custom, license=license, layout=layout), "", f"# {title}", ""]
    lines += [intro, ""]
    if license == DEFAULT_LICENSE:
        lines += [
            "**License not set**: the license field says `other`. Set it to the license of the "
            "training data and your terms (`scratchlm export hf --license apache-2.0`, or edit "
            "this card's metadata).",
            "",
        ]
    lines += [
        "## Architecture",
        "",
        table(("what", "value"), architecture_rows(config, hf_config, layout)),
        "",
    ]
    assert config.padded_vocab_size is not None
    tokenizer_rows = [
        ["kind", tokenizer.kind],
        [
            "vocabulary",
            f"{tokenizer.vocab_size:,} tokens (embedding rows padded to {config.padded_vocab_size:,})",
        ],
        [
            "chat template",
            f"scratchlm v{tokenizer.chat_template_version} (in tokenizer_config.json)",
        ],
    ]
    lines += ["## Tokenizer", "", table(("what", "value"), tokenizer_rows), ""]
    lines += [*training_section(checkpoint, run), ""]
    lines += [*evaluation_section(run), ""]
    lines += [
        "## Usage",
        "",
        "Generation stops at `<|end|>` (the end of a chat turn) or `<|endoftext|>` "
        "(generation_config.json).",
        "",
        usage_snippet(model_id, custom),
        "",
    ]
    return "\n".join(lines)
