"""Read a run directory (run_config.json, metrics.jsonl) into plain data for the report.

Every field is optional: runs written by older versions, interrupted runs and fine-tuning runs lack
some of them, and the report says "not recorded" instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scratchlm.errors import ScratchLMError
from scratchlm.io_utils import read_jsonl

METRICS_FILE = "metrics.jsonl"
RUN_CONFIG_FILE = "run_config.json"
# `scratchlm eval --tasks ... --json > RUN/eval/NAME.json`: benchmark results run by hand.
EVAL_DIR = "eval"
CHECKPOINT_CONFIG = "config.json"  # a checkpoint's metadata (the trainer's checkpoint_metadata)
# Post-training kinds: the checkpoint metadata key each trainer writes its settings under, and
# the record each writes once, before its first step, with the starting model's held-out numbers.
BEFORE_KINDS = {"dpo": "preference_before", "rl": "rl_before"}
# Evaluation keys that only one post-training trainer writes (a run whose checkpoints are gone).
EVAL_MARKERS = {"dpo": "val_reward_accuracy", "rl": "pass@1"}


@dataclass
class RunData:
    run_dir: Path
    settings: dict[str, Any]  # the TrainConfig fields of run_config.json
    resolved: dict[str, Any]  # run_config.json "resolved": what the trainer derived
    records: list[dict[str, Any]]  # every metrics.jsonl record, in file order
    train: list[dict[str, Any]] = field(default_factory=list)  # last record per step, by step
    evals: list[dict[str, Any]] = field(default_factory=list)  # last record per step, by step
    backtracks: list[dict[str, Any]] = field(default_factory=list)  # in file order
    # loss-spike batches dropped without a backtrack (a lone spike; see --spike-factor)
    skipped_batches: list[dict[str, Any]] = field(default_factory=list)
    early_stop: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    # RUN/eval/*.json that hold `scratchlm eval --tasks --json` output: (file name, its JSON)
    hand_evals: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # "dpo" or "rl" for a post-training run, else None (pretraining, finetune or unknown)
    kind: str | None = None
    # the post-training settings from the checkpoint metadata ({"loss": ..., "beta": ...} for dpo)
    post_settings: dict[str, Any] = field(default_factory=dict)
    # the starting model's held-out numbers (the last preference_before / rl_before record)
    before: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.run_dir.resolve().name

    @property
    def model(self) -> dict[str, Any]:
        model = self.resolved.get("model")
        return model if isinstance(model, dict) else {}

    @property
    def hardware(self) -> dict[str, Any]:
        hardware = self.resolved.get("hardware")
        return hardware if isinstance(hardware, dict) else {}


def finite(value: Any) -> float | None:
    """`value` as a float if it is a finite number (JSON may hold NaN, null or strings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def last_per_step(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step, the last one written, sorted by step.

    A resumed run appends to metrics.jsonl, and a backtrack rewinds the step counter, so a step
    can appear several times; the last record is the one on the path the run finally took."""
    by_step: dict[int, dict[str, Any]] = {}
    for record in records:
        step = record.get("step")
        if isinstance(step, int) and not isinstance(step, bool):
            by_step[step] = record
    return [by_step[step] for step in sorted(by_step)]


def load_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Read a run directory; a missing directory or metrics.jsonl is a ScratchLMError."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ScratchLMError(
            f"run directory {path} does not exist; pass the --out directory of a "
            "`scratchlm train` or `scratchlm finetune` run"
        )
    metrics_path = path / METRICS_FILE
    if not metrics_path.is_file():
        raise ScratchLMError(
            f"{path} has no {METRICS_FILE}, so it is not a training run directory; pass the "
            "--out directory of a `scratchlm train` or `scratchlm finetune` run"
        )
    settings: dict[str, Any] = {}
    resolved: dict[str, Any] = {}
    config_path = path / RUN_CONFIG_FILE
    if config_path.is_file():
        try:
            loaded = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            loaded = {}  # a damaged config costs the config table, not the report
        if isinstance(loaded, dict):
            resolved_value = loaded.pop("resolved", {})
            resolved = resolved_value if isinstance(resolved_value, dict) else {}
            settings = loaded
    records = [record for record in read_jsonl(metrics_path) if isinstance(record, dict)]

    def of_kind(kind: str) -> list[dict[str, Any]]:
        # Records written before "kind" existed were training records.
        return [record for record in records if record.get("kind", "train") == kind]

    early_stops, ends = of_kind("early_stop"), of_kind("end")
    evals = last_per_step(of_kind("eval"))
    kind, post_settings = run_kind(checkpoint_metadata(path), records, evals)
    befores = of_kind(BEFORE_KINDS[kind]) if kind is not None else []
    return RunData(
        run_dir=path,
        settings=settings,
        resolved=resolved,
        records=records,
        train=last_per_step(of_kind("train")),
        evals=evals,
        backtracks=of_kind("backtrack"),
        skipped_batches=of_kind("skipped_batch"),
        early_stop=early_stops[-1] if early_stops else None,
        end=ends[-1] if ends else None,
        hand_evals=read_hand_evals(path / EVAL_DIR),
        kind=kind,
        post_settings=post_settings,
        before=befores[-1] if befores else None,
    )


def checkpoint_metadata(run_dir: Path) -> dict[str, Any]:
    """config.json of the run's best/, else latest, else newest checkpoint; {} when none is
    readable. Read as JSON only: the report needs the run's kind, not the weights."""
    candidates = [run_dir / "best"]
    latest = run_dir / "latest"  # a file holding the latest checkpoint's path, relative to the run
    if latest.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            candidates.append(run_dir / latest.read_text(encoding="utf-8").strip())
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir():
        candidates += sorted(checkpoints.iterdir(), reverse=True)
    for candidate in candidates:
        try:
            values = json.loads((candidate / CHECKPOINT_CONFIG).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(values, dict):
            return values
    return {}


def run_kind(
    metadata: dict[str, Any], records: list[dict[str, Any]], evals: list[dict[str, Any]]
) -> tuple[str | None, dict[str, Any]]:
    """("dpo" | "rl" | None, the post-training settings): from the checkpoint metadata's "dpo" /
    "rl" key, else from the records (a before record, or an evaluation key only one writes)."""
    for kind in BEFORE_KINDS:
        settings = metadata.get(kind)
        if isinstance(settings, dict):
            return kind, settings
    kinds = {record.get("kind") for record in records}
    for kind, before in BEFORE_KINDS.items():
        if before in kinds or any(EVAL_MARKERS[kind] in record for record in evals):
            return kind, {}
    return None, {}


def read_hand_evals(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """The `scratchlm eval --tasks --json` outputs saved in `folder`, by file name; files that
    are not one (unreadable, other JSON) are left out: the report shows what it can read."""
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(values, dict) and isinstance(values.get("aggregate_tasks"), list):
            found.append((path.name, values))
    return found


def series(records: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(step, value) for each record whose `key` is a finite number."""
    points = []
    for record in records:
        step, value = finite(record.get("step")), finite(record.get(key))
        if step is not None and value is not None:
            points.append((step, value))
    return points


def mfu_series(run: RunData) -> tuple[list[tuple[float, float]], str]:
    """MFU in percent over steps, and where it came from.

    Newer trainers log `mfu` per record; for older records it is derived from tokens/s when
    run_config.json holds the FLOPs per token and the peak (the peak of all devices together)."""
    logged = series(run.train, "mfu")
    if logged:
        return [(step, 100.0 * value) for step, value in logged], "logged by the trainer"
    flops_per_token = finite(run.resolved.get("flops_per_token"))
    peak = finite(run.resolved.get("peak_flops"))
    if flops_per_token is None or peak is None or peak <= 0:
        return [], "not recorded"
    devices = finite(run.resolved.get("world_size")) or 1.0
    derived = [
        (step, 100.0 * rate * flops_per_token / (peak * devices))
        for step, rate in series(run.train, "tokens_per_s")
    ]
    return derived, "derived from tokens/s, FLOPs per token and the recorded peak"


def summary(run: RunData) -> dict[str, Any]:
    """The run's final numbers: from the `end` record when there is one, else from the others."""
    end = run.end or {}
    last_train = run.train[-1] if run.train else {}
    all_records = run.train + run.evals
    steps = end.get("step", max((r["step"] for r in all_records), default=None))
    tokens = end.get("tokens", last_train.get("tokens"))
    elapsed = finite(end.get("elapsed_s"))
    if elapsed is None:
        elapsed = max(
            (value for r in run.records if (value := finite(r.get("elapsed_s"))) is not None),
            default=None,
        )
    best_eval = min(
        (r for r in run.evals if finite(r.get("val_loss")) is not None),
        key=lambda r: r["val_loss"],
        default=None,
    )
    best_val_loss = end.get("best_val_loss", best_eval["val_loss"] if best_eval else None)
    best_step = end.get("best_step", best_eval["step"] if best_eval else None)
    if best_step is not None:
        # The end record names the best step; its eval record holds the matching perplexity.
        best_eval = next((r for r in run.evals if r.get("step") == best_step), best_eval)
    rates = [value for _, value in series(run.train, "tokens_per_s")]
    mfu_points, _ = mfu_series(run)
    average_rate = (
        tokens / elapsed
        if isinstance(tokens, (int, float)) and elapsed is not None and elapsed > 0
        else None
    )
    last_eval = run.evals[-1] if run.evals else {}
    # DPO's and RL's validation loss is no language-model loss: exp() of it is no perplexity
    # (older post-training runs logged one anyway, NaN for RL), so none is shown for them.
    language_model = run.kind is None
    return {
        "steps": steps,
        "tokens": tokens,
        "elapsed_s": elapsed,
        "final_train_loss": end.get("final_train_loss", last_train.get("loss")),
        "final_val_loss": last_eval.get("val_loss"),
        "best_val_loss": best_val_loss,
        "best_step": best_step,
        "best_val_perplexity": (
            finite(best_eval.get("val_perplexity")) if best_eval and language_model else None
        ),
        "best_val_bits_per_byte": (
            finite(best_eval.get("val_bits_per_byte")) if best_eval and language_model else None
        ),
        "average_tokens_per_s": average_rate,
        "median_logged_tokens_per_s": statistics.median(rates) if rates else None,
        "median_mfu_percent": statistics.median([v for _, v in mfu_points]) if mfu_points else None,
        "backtracks": len(run.backtracks),
        "skipped_batches": len(run.skipped_batches),
        "early_stop": run.early_stop,
        # Without an end record only an early_stop record proves anything; None = not recorded.
        "stopped_early": end.get("stopped_early", True if run.early_stop else None),
        "stop_reason": end.get("reason"),
        "ended": run.end is not None,
    }
