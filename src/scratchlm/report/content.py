"""What the report says, independent of how it is drawn: rows of (label, text) and chart specs.

The HTML and Markdown renderers both consume these, so the two pages always hold the same facts.
Values are formatted to plain text here; each renderer escapes for its own format.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from scratchlm.report.run import EVAL_DIR, RunData, finite, mfu_series, series, summary
from scratchlm.report.speed import InferenceSpeed
from scratchlm.report.svg import COLORS, Event, Series

NOT_RECORDED = "not recorded"
Rows = list[tuple[str, str]]
# What a post-training run's losses are (RunData.kind -> name): not language-model losses.
VAL_LOSS_NAMES = {"dpo": "held-out preference loss", "rl": "1 - pass@1"}
TRAIN_LOSS_NAMES = {"dpo": "preference loss", "rl": "policy-gradient surrogate loss"}


def format_value(value: Any, none: str = NOT_RECORDED) -> str:
    """Plain text for a JSON value; `none` is what null means where it is shown (in a config,
    null is a setting: "none"; in a metric it is a gap: "not recorded")."""
    if value is None:
        return none
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.4g}"
        return f"{value:.4f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(item) for item in value) if value else "none"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return NOT_RECORDED
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{seconds:.1f}s"


def format_rate(value: Any, unit: str = "tokens/s") -> str:
    number = finite(value)
    return NOT_RECORDED if number is None else f"{number:,.0f} {unit}"


def format_flops(value: Any) -> str:
    number = finite(value)
    if number is None:
        return NOT_RECORDED
    for threshold, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if number >= threshold:
            return f"{number / threshold:.3g} {prefix}FLOP"
    return f"{number:.3g} FLOP"


# --- tables ---------------------------------------------------------------------------------------
def summary_rows(run: RunData) -> Rows:
    facts = summary(run)
    best = facts["best_val_loss"]
    best_text = (
        f"{format_value(best)} at step {format_value(facts['best_step'])}"
        if best is not None
        else NOT_RECORDED
    )
    if facts["best_val_perplexity"] is not None:
        best_text += f" (perplexity {format_value(facts['best_val_perplexity'])}"
        if facts["best_val_bits_per_byte"] is not None:
            best_text += f", {format_value(facts['best_val_bits_per_byte'])} bits/byte"
        best_text += ")"
    early = facts["early_stop"]
    if early:
        early_text = (
            f"yes, at step {format_value(early.get('step'))} (best step "
            f"{format_value(early.get('best_step'))}, patience {format_value(early.get('patience'))})"
        )
    else:
        early_text = format_value(facts["stopped_early"])
    mfu_text = (
        f"{facts['median_mfu_percent']:.2f}%"
        if facts["median_mfu_percent"] is not None
        else NOT_RECORDED
    )
    # "validation loss (held-out preference loss)" where the run's kind says what it is
    val_name = f" ({VAL_LOSS_NAMES[run.kind]})" if run.kind in VAL_LOSS_NAMES else ""
    train_name = f" ({TRAIN_LOSS_NAMES[run.kind]})" if run.kind in TRAIN_LOSS_NAMES else ""
    return [
        ("steps", format_value(facts["steps"])),
        ("tokens", format_value(facts["tokens"])),
        ("training time", format_duration(facts["elapsed_s"])),
        (f"final train loss{train_name}", format_value(facts["final_train_loss"])),
        (f"final validation loss{val_name}", format_value(facts["final_val_loss"])),
        (f"best validation loss{val_name}", best_text),
        ("average throughput", format_rate(facts["average_tokens_per_s"])),
        ("median logged throughput", format_rate(facts["median_logged_tokens_per_s"])),
        ("median MFU", mfu_text),
        ("backtracks", format_value(facts["backtracks"])),
        ("loss-spike batches skipped", format_value(facts["skipped_batches"])),
        ("stopped early", early_text),
        (
            "run status",
            # The last end record wins: a paused run that was resumed and finished says so.
            f"ended: {format_value(facts['stop_reason'], none='reason not recorded')}"
            if facts["ended"]
            else "no end record (still running, interrupted, or an older trainer)",
        ),
    ]


def settings_rows(run: RunData) -> Rows:
    return [(key, format_value(value, none="none")) for key, value in run.settings.items()]


def resolved_rows(run: RunData) -> Rows:
    """What the trainer derived (learning rate, accumulation, ...), minus the model and machine."""
    skip = {"model", "hardware", "peak_flops", "peak_flops_source", "flops_per_token", "world_size"}
    rows = []
    for key, value in run.resolved.items():
        if key in skip:
            continue
        rows.append((key, format_value(value, none="none")))
    return rows


def model_rows(run: RunData) -> Rows:
    return [(key, format_value(value, none="none")) for key, value in run.model.items()]


def flops_per_token(run: RunData) -> tuple[float | None, str]:
    """The recorded training FLOPs per token, else computed here from the model config."""
    recorded = finite(run.resolved.get("flops_per_token"))
    if recorded is not None:
        return recorded, "recorded by the trainer"
    if not run.model:
        return None, NOT_RECORDED
    from scratchlm.config import ModelConfig, model_flops_per_token
    from scratchlm.errors import ScratchLMError

    try:
        return model_flops_per_token(ModelConfig.from_dict(run.model)), "computed by the report"
    except (ScratchLMError, TypeError):
        return None, NOT_RECORDED


def hardware_rows(run: RunData) -> Rows:
    hardware = run.hardware
    rows: Rows = []
    if not hardware:
        rows.append(("hardware", f"{NOT_RECORDED} (run written before hardware was logged)"))
    labels = {
        "device": "device",
        "cpu_model": "CPU",
        "cpu_count": "CPU cores (logical)",
        "torch_threads": "torch threads",
        "ram_gb": "RAM (GiB)",
        "gpu_name": "GPU",
        "gpu_count": "GPUs",
        "gpu_memory_gb": "GPU memory (GiB)",
        "cpu_flags_of_note": "CPU flags of note",
        "torch_version": "torch",
        "python_version": "Python",
        "platform": "platform",
    }
    for key, label in labels.items():
        if key in hardware:
            rows.append((label, format_value(hardware[key])))
    for key, value in hardware.items():
        if key not in labels:
            rows.append((key, format_value(value)))
    if "device" not in hardware and "device" in run.resolved:
        rows.append(("device", format_value(run.resolved["device"])))
    rows.append(("precision", format_value(run.resolved.get("precision"))))
    rows.append(("processes (world size)", format_value(run.resolved.get("world_size"))))
    peak = finite(run.resolved.get("peak_flops"))
    source = run.resolved.get("peak_flops_source")
    peak_text = f"{format_flops(peak)}/s" if peak is not None else NOT_RECORDED
    if source:
        peak_text += f" ({source})"
    rows.append(("peak FLOP/s per device", peak_text))
    per_token, origin = flops_per_token(run)
    rows.append(
        (
            "training FLOPs per token",
            f"{format_flops(per_token)} ({origin})" if per_token is not None else NOT_RECORDED,
        )
    )
    return rows


BACKTRACK_COLUMNS = (
    "step",
    "restored step",
    "reason",
    "loss",
    "moving average",
    "new lr scale",
    "backtracks so far",
)


def backtrack_rows(run: RunData) -> list[list[str]]:
    keys = ("step", "restored_step", "reason", "loss", "moving_average", "lr_scale", "backtracks")
    return [[format_value(record.get(key)) for key in keys] for record in run.backtracks]


EVAL_COLUMNS = ("step", "tokens", "val loss", "perplexity", "bits/byte", "time")


def language_model_columns(run: RunData) -> tuple[bool, bool]:
    """Whether the evaluations table has (perplexity, bits/byte) columns: only for a language
    model's loss (not DPO's or RL's), and only when some evaluation recorded a finite value."""
    if run.kind is not None:
        return False, False

    def recorded(key: str) -> bool:
        return any(finite(record.get(key)) is not None for record in run.evals)

    perplexity = recorded("val_perplexity")
    # bits/byte stays next to perplexity ("not recorded" where the split had no byte count)
    return perplexity, perplexity or recorded("val_bits_per_byte")


def eval_columns(run: RunData) -> tuple[str, ...]:
    perplexity, bits = language_model_columns(run)
    return (
        "step",
        "tokens",
        VAL_LOSS_NAMES.get(run.kind or "", "val loss"),
        *(("perplexity",) if perplexity else ()),
        *(("bits/byte",) if bits else ()),
        "time",
    )


@dataclass
class Evaluation:
    cells: list[str]  # one per eval_columns(run); cells[0] is the step
    sample: str | None


def evaluations(run: RunData) -> list[Evaluation]:
    perplexity, bits = language_model_columns(run)
    result = []
    for record in run.evals:
        sample = record.get("sample")
        result.append(
            Evaluation(
                cells=[
                    format_value(record.get("step")),
                    format_value(record.get("tokens")),
                    format_value(record.get("val_loss")),
                    *([format_value(record.get("val_perplexity"))] if perplexity else []),
                    *([format_value(record.get("val_bits_per_byte"))] if bits else []),
                    format_duration(finite(record.get("elapsed_s"))),
                ],
                sample=str(sample) if sample else None,
            )
        )
    return result


def before_sample(run: RunData) -> str | None:
    """The starting model's sample of a post-training run (rl_before's problem -> reply
    [reward]); None when there is none."""
    sample = run.before.get("sample") if run.before else None
    return str(sample) if sample else None


# --- benchmarks (--eval-tasks, and `scratchlm eval --tasks --json` saved as RUN/eval/*.json) ------
TASK_PREFIX = "task/"
AGGREGATE_KEY = (
    "task/centered_aggregate"  # training.benchmarks' keys (the report reads, never imports)
)
BENCHMARK_COLUMNS = ("task", "metric", "value", "chance", "centered", "examples")
AGGREGATE_LABEL = "centered aggregate"


def scored_evals(run: RunData) -> list[dict[str, Any]]:
    """The evaluation records that scored --eval-tasks, by step."""
    return [record for record in run.evals if finite(record.get(AGGREGATE_KEY)) is not None]


def task_names(record: dict[str, Any]) -> list[str]:
    """The tasks of an evaluation record, in logged order (task/NAME/centered keys)."""
    return [
        key[len(TASK_PREFIX) : -len("/centered")]
        for key in record
        if key.startswith(TASK_PREFIX) and key.endswith("/centered")
    ]


def _score(value: Any) -> str:
    number = finite(value)
    return NOT_RECORDED if number is None else f"{number:.4f}"


def _task_row(name: str, record: dict[str, Any]) -> list[str]:
    info = record.get("task_info")
    details = info.get(name) if isinstance(info, dict) else None
    details = details if isinstance(details, dict) else {}
    # The metric: task_info's, else the one task/NAME/METRIC key that is not "centered".
    metric = details.get("metric") or next(
        (
            key.rsplit("/", 1)[1]
            for key in record
            if key.startswith(f"{TASK_PREFIX}{name}/") and not key.endswith("/centered")
        ),
        None,
    )
    return [
        name,
        format_value(metric),
        _score(record.get(f"{TASK_PREFIX}{name}/{metric}")),
        format_value(details.get("chance")),
        _score(record.get(f"{TASK_PREFIX}{name}/centered")),
        format_value(details.get("examples")),
    ]


@dataclass
class Benchmarks:
    """The last scored step's task table, and one row per scored step (centered values)."""

    step: str
    rows: list[list[str]]
    step_columns: list[str]
    step_rows: list[list[str]]


def training_benchmarks(run: RunData) -> Benchmarks | None:
    """None when the run scored no --eval-tasks."""
    scored = scored_evals(run)
    if not scored:
        return None
    last = scored[-1]
    names = task_names(last)
    rows = [_task_row(name, last) for name in names]
    rows.append([AGGREGATE_LABEL, "", "", "", _score(last.get(AGGREGATE_KEY)), ""])
    step_rows = [
        [
            format_value(record.get("step")),
            *(_score(record.get(f"{TASK_PREFIX}{name}/centered")) for name in names),
            _score(record.get(AGGREGATE_KEY)),
        ]
        for record in scored
    ]
    return Benchmarks(
        step=format_value(last.get("step")),
        rows=rows,
        step_columns=["step", *names, "aggregate"],
        step_rows=step_rows if len(scored) > 1 else [],
    )


@dataclass
class HandEval:
    """One saved `scratchlm eval --tasks --json` output."""

    file: str
    note: str
    rows: list[list[str]]


def hand_evals(run: RunData) -> list[HandEval]:
    result = []
    for name, values in run.hand_evals:
        rows = [
            [
                format_value(entry.get("task")),
                format_value(entry.get("metric")),
                _score(entry.get("value")),
                format_value(entry.get("random_baseline")),
                _score(entry.get("centered")),
                format_value(entry.get("examples")),
            ]
            for entry in values["aggregate_tasks"]
            if isinstance(entry, dict)
        ]
        rows.append([AGGREGATE_LABEL, "", "", "", _score(values.get("centered_aggregate")), ""])
        note = (
            f"checkpoint {format_value(values.get('checkpoint'))}, "
            f"{format_value(values.get('num_fewshot'))}-shot, "
            f"limit {format_value(values.get('limit'), none='none')}"
        )
        result.append(HandEval(f"{EVAL_DIR}/{name}", note, rows))
    return result


def speed_rows(speed: InferenceSpeed) -> Rows:
    if speed.skipped:
        return [("inference speed", "not measured (--no-bench)")]
    if speed.error is not None:
        rows = [("inference speed", f"not measured: {speed.error}")]
        if speed.checkpoint:
            rows.insert(0, ("checkpoint", speed.checkpoint))
        return rows
    values = speed.values
    setting = (
        f"{format_value(values.get('prompt_tokens'))} prompt tokens, "
        f"{format_value(values.get('new_tokens'))} new tokens, greedy, batch 1, "
        f"{format_value(values.get('num_runs'))} timed run(s) after a warm-up"
    )
    return [
        ("checkpoint", format_value(speed.checkpoint)),
        ("measured", setting),
        (
            "on",
            f"{values.get('device', '?')}, {values.get('dtype', '?')} weights, "
            f"{format_value(values.get('threads'))} threads (this machine, at report time)",
        ),
        ("prefill", format_rate(values.get("prefill_tokens_per_s"))),
        ("decode (batch 1)", format_rate(values.get("decode_tokens_per_s"))),
        (
            "time to first token",
            f"{values['time_to_first_token_s'] * 1000:.1f} ms"
            if finite(values.get("time_to_first_token_s")) is not None
            else NOT_RECORDED,
        ),
        ("parameters", format_value(values.get("n_params"))),
    ]


# --- charts ---------------------------------------------------------------------------------------
@dataclass
class Chart:
    plot_id: str
    title: str
    y_label: str
    series: list[Series]
    events: list[Event] = field(default_factory=list)
    y_min: float | None = None
    note: str = ""


def backtrack_events(run: RunData) -> list[Event]:
    events = []
    for record in run.backtracks:
        step = finite(record.get("step"))
        if step is None:
            continue
        events.append(
            Event(
                x=step,
                kind="backtrack",
                label=(
                    f"backtrack at step {format_value(record.get('step'))} "
                    f"({format_value(record.get('reason'))}): restored step "
                    f"{format_value(record.get('restored_step'))}, lr scale "
                    f"{format_value(record.get('lr_scale'))}"
                ),
            )
        )
    return events


def charts(run: RunData) -> list[Chart]:
    """Loss, learning rate and tokens/s always (empty ones say "not recorded"); MFU and gradient
    norm when the run logged them."""
    events = backtrack_events(run)
    # A post-training run's losses by their names; a language model's loss is in nats/token.
    post = run.kind in VAL_LOSS_NAMES
    result = [
        Chart(
            "loss",
            "Loss",
            "loss" if post else "loss (nats/token)",
            [
                Series(
                    f"train {TRAIN_LOSS_NAMES[run.kind or '']}" if post else "train loss",
                    series(run.train, "loss"),
                    COLORS[0],
                ),
                Series(
                    VAL_LOSS_NAMES[run.kind or ""] if post else "validation loss",
                    series(run.evals, "val_loss"),
                    COLORS[1],
                    markers=True,
                ),
            ],
            events,
        ),
        *benchmark_charts(run),
        Chart(
            "lr",
            "Learning rate",
            "learning rate",
            [Series("lr", series(run.train, "lr"), COLORS[2])],
            events,
            y_min=0.0,
        ),
        Chart(
            "tokens-per-s",
            "Throughput",
            "tokens/s",
            [Series("tokens/s", series(run.train, "tokens_per_s"), COLORS[3])],
            events,
            y_min=0.0,
        ),
    ]
    mfu_points, origin = mfu_series(run)
    if mfu_points:
        result.append(
            Chart(
                "mfu",
                "Model FLOPs utilization",
                "MFU (%)",
                [Series("MFU %", mfu_points, COLORS[4])],
                events,
                y_min=0.0,
                note=origin,
            )
        )
    grad_norms = series(run.train, "grad_norm")
    if grad_norms:
        result.append(
            Chart(
                "grad-norm",
                "Gradient norm",
                "gradient norm",
                [Series("grad norm", grad_norms, COLORS[0])],
                events,
                y_min=0.0,
            )
        )
    return result


def benchmark_charts(run: RunData) -> list[Chart]:
    """The centered aggregate (and each task's centered value) over steps, when --eval-tasks was
    scored: next to the loss, the other way to read progress."""
    scored = scored_evals(run)
    if not scored:
        return []
    names = task_names(scored[-1])
    return [
        Chart(
            "benchmarks",
            "Benchmarks (centered: 0 = chance, 1 = perfect)",
            "centered accuracy",
            [
                Series(AGGREGATE_LABEL, series(scored, AGGREGATE_KEY), COLORS[1], markers=True),
                *(
                    Series(
                        name,
                        series(scored, f"{TASK_PREFIX}{name}/centered"),
                        COLORS[(index + 2) % len(COLORS)],  # the aggregate keeps COLORS[1]
                    )
                    for index, name in enumerate(names)
                ),
            ],
        )
    ]


# --- post-training (dpo, rl) ----------------------------------------------------------------------
@dataclass(frozen=True)
class Measure:
    key: str  # the evaluation record's key
    name: str  # its plain name in the report


DPO_MEASURES = (
    Measure("val_preference_accuracy", "held-out preference accuracy"),
    Measure("val_preference_accuracy_per_token", "held-out preference accuracy (per token)"),
    Measure("val_reward_accuracy", "reward accuracy (chosen beats rejected)"),
    Measure("val_reward_margin", "reward margin"),
    Measure("val_loss", VAL_LOSS_NAMES["dpo"]),
)
POST_NOTES = {
    "dpo": (
        "On the held-out pairs. Preference accuracy: the fraction where the model gives the chosen "
        "reply a higher log-probability than the rejected one (summed over the reply; per token: "
        "the mean per reply token, fair to replies of different lengths). Reward accuracy and "
        "margin: the same comparison of the implicit rewards, log-probability gains over the "
        "reference model (the starting model; 0 before training by construction)."
    ),
    "rl": (
        "On the held-out problems. pass@1 (greedy): the fraction whose greedy reply earns the full "
        "reward. pass@k: the chance that at least one of k replies sampled at the training "
        "temperature does (unbiased estimator). Sampled pass@1: the fraction of sampled replies "
        "that do. Mean reward: over the sampled replies (greedy: over the greedy replies)."
    ),
}
POST_TITLES = {"dpo": "DPO (preference optimization)", "rl": "RL (reinforcement learning)"}


def post_measures(run: RunData) -> list[Measure]:
    """The run's held-out measures that some record holds (older runs lack the newer ones)."""
    if run.kind == "dpo":
        candidates = list(DPO_MEASURES)
    elif run.kind == "rl":
        records = [*([run.before] if run.before else []), *run.evals]
        k = next((r["pass_k"] for r in reversed(records) if finite(r.get("pass_k"))), None)
        candidates = [
            Measure("pass@1", "pass@1 (greedy)"),
            Measure("pass@k", f"pass@k (k={format_value(k)})" if k is not None else "pass@k"),
            Measure("sampled_pass@1", "sampled pass@1"),
            Measure("reward_mean", "mean reward"),
            Measure("greedy_reward_mean", "mean reward (greedy)"),
        ]
    else:
        return []
    points = [*([run.before] if run.before else []), *run.evals]
    return [m for m in candidates if any(finite(r.get(m.key)) is not None for r in points)]


def _change(before: dict[str, Any] | None, after: dict[str, Any] | None, key: str) -> str:
    start = finite(before.get(key)) if before else None
    end = finite(after.get(key)) if after else None
    if start is None or end is None:
        return NOT_RECORDED
    delta = end - start
    return ("+" if delta >= 0 else "") + format_value(delta)


@dataclass
class PostTraining:
    """A DPO or RL run's held-out measures before training and after, and its training curves."""

    title: str
    settings: Rows
    columns: list[str]  # measure | before training | best checkpoint | last evaluation | change
    rows: list[list[str]]
    step_columns: list[str]  # step | one column per measure
    step_rows: list[list[str]]  # the starting model (step 0), then each evaluation
    charts: list[Chart]
    note: str


def post_training(run: RunData) -> PostTraining | None:
    """None unless the run is a DPO or RL run (by its checkpoint metadata or its records)."""
    if run.kind not in POST_TITLES:
        return None
    kind = run.kind or ""
    measures = post_measures(run)
    facts = summary(run)
    last = run.evals[-1] if run.evals else None
    best = next((r for r in run.evals if r.get("step") == facts["best_step"]), None)
    columns = [
        "measure",
        "before training",
        f"best checkpoint (step {format_value(best.get('step'))})" if best else "best checkpoint",
        f"last evaluation (step {format_value(last.get('step'))})" if last else "last evaluation",
        "change (last - before)",
    ]
    rows = [
        [
            measure.name,
            *(
                format_value(finite(record.get(measure.key)) if record else None)
                for record in (run.before, best, last)
            ),
            _change(run.before, last, measure.key),
        ]
        for measure in measures
    ]
    points = [*([run.before] if run.before else []), *run.evals]
    step_rows = [
        [
            "0 (before training)" if record is run.before else format_value(record.get("step")),
            *(format_value(finite(record.get(measure.key))) for measure in measures),
        ]
        for record in points
    ]
    return PostTraining(
        title=POST_TITLES[kind],
        settings=[
            (key, format_value(value, none="none")) for key, value in run.post_settings.items()
        ],
        columns=columns,
        rows=rows,
        step_columns=["step", *(measure.name for measure in measures)],
        step_rows=step_rows,
        charts=post_charts(run, points),
        note=POST_NOTES[kind],
    )


def post_charts(run: RunData, points: list[dict[str, Any]]) -> list[Chart]:
    """Training measures per step (lines) with the held-out ones at each evaluation (markers;
    step 0 is the starting model). Charts with nothing recorded are left out. Few series per
    chart: the legend sits right of the title on one line."""
    events = backtrack_events(run)
    if run.kind == "dpo":
        charts = [
            Chart(
                "post-reward-accuracy",
                "Reward accuracy",
                "chosen beats rejected (fraction)",
                [
                    Series(
                        "reward accuracy (train)", series(run.train, "reward_accuracy"), COLORS[0]
                    ),
                    Series(
                        "reward accuracy (held-out)",
                        series(points, "val_reward_accuracy"),
                        COLORS[1],
                        markers=True,
                    ),
                ],
                events,
                y_min=0.0,
            ),
            Chart(
                "post-reward-margin",
                "Reward margin",
                "reward(chosen) - reward(rejected)",
                [
                    Series("reward margin (train)", series(run.train, "reward_margin"), COLORS[0]),
                    Series(
                        "reward margin (held-out)",
                        series(points, "val_reward_margin"),
                        COLORS[1],
                        markers=True,
                    ),
                ],
                events,
            ),
            Chart(
                "post-preference-accuracy",
                "Preference accuracy",
                "fraction of held-out pairs",
                [
                    Series(
                        "held-out preference accuracy",
                        series(points, "val_preference_accuracy"),
                        COLORS[2],
                        markers=True,
                    ),
                    Series(
                        "per token",
                        series(points, "val_preference_accuracy_per_token"),
                        COLORS[3],
                        markers=True,
                    ),
                ],
                y_min=0.0,
            ),
        ]
    else:
        # "pass@k (k=8)": k as the records say
        pass_k_name = next((m.name for m in post_measures(run) if m.key == "pass@k"), "pass@k")
        charts = [
            Chart(
                "post-reward",
                "Mean reward",
                "reward",
                [
                    Series(
                        "mean reward (train rollouts)", series(run.train, "reward_mean"), COLORS[0]
                    ),
                    Series(
                        "mean reward (held-out)",
                        series(points, "reward_mean"),
                        COLORS[1],
                        markers=True,
                    ),
                ],
                events,
            ),
            Chart(
                "post-pass-rates",
                "Held-out pass rates",
                "fraction of problems",
                [
                    Series("pass@1 (greedy)", series(points, "pass@1"), COLORS[2], markers=True),
                    Series(pass_k_name, series(points, "pass@k"), COLORS[3], markers=True),
                    Series(
                        "sampled pass@1", series(points, "sampled_pass@1"), COLORS[4], markers=True
                    ),
                ],
                y_min=0.0,
            ),
            Chart(
                "post-signal",
                "Rollout groups with a learning signal",
                "fraction of groups",
                [Series("signal fraction", series(run.train, "signal_fraction"), COLORS[4])],
                events,
                y_min=0.0,
                note="a group whose replies all earn the same reward has zero advantage",
            ),
        ]
    # Series with no point are dropped (older runs lack the newer keys); so are empty charts.
    for chart in charts:
        chart.series = [item for item in chart.series if item.points]
    return [chart for chart in charts if chart.series]
