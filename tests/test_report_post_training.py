"""`scratchlm report` of post-training runs (dpo, rl): the Post-training section's numbers, the
evaluations table without a perplexity column, the loss named for what it is, the RL samples; and a
pretraining run's report as before. The runs are metrics.jsonl files written here by hand, shaped
like the records finetune/dpo.py and finetune/rl.py write (no training)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from scratchlm.report import load_run, write_report


def write_run(
    root: Path, records: list[dict[str, Any]], metadata: dict[str, Any] | None = None
) -> Path:
    """A run directory: metrics.jsonl, and `metadata` as a checkpoint's config.json reached the
    way the trainer leaves it (RUN/latest names checkpoints/step_N)."""
    root.mkdir()
    with open(root / "metrics.jsonl", "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")  # NaN stays NaN, as the trainer writes it
    if metadata is not None:
        checkpoint = root / "checkpoints" / "step_000004"
        checkpoint.mkdir(parents=True)
        (checkpoint / "config.json").write_text(json.dumps(metadata), encoding="utf-8")
        (root / "latest").write_text("checkpoints/step_000004", encoding="utf-8")
    return root


def lines_of(markdown: str) -> list[str]:
    return markdown.splitlines()


def has_nan(text: str) -> bool:
    return re.search(r"\bnan\b", text, flags=re.IGNORECASE) is not None


# Held-out numbers of a DPO run: before training, at step 2 and at step 4 (the last; step 2 best).
DPO_POINTS = {
    0: {"acc": 0.4, "per_token": 0.5, "reward_acc": 0.0, "margin": 0.0, "loss": 0.6931},
    2: {"acc": 0.7, "per_token": 0.65, "reward_acc": 0.8, "margin": 1.5, "loss": 0.25},
    4: {"acc": 0.6, "per_token": 0.75, "reward_acc": 0.9, "margin": 2.5, "loss": 0.3},
}


def dpo_values(step: int) -> dict[str, float]:
    point = DPO_POINTS[step]
    return {
        "val_loss": point["loss"],
        "val_reward_accuracy": point["reward_acc"],
        "val_reward_margin": point["margin"],
        "val_preference_accuracy": point["acc"],
        "val_preference_accuracy_per_token": point["per_token"],
    }


def dpo_run(root: Path, *, metadata: bool = True) -> Path:
    train = [
        {
            "kind": "train",
            "step": step,
            "tokens": 512 * step,
            "loss": 0.7 - 0.1 * step,
            "lr": 1e-4,
            "tokens_per_s": 1000.0,
            "reward_accuracy": 0.25 * step,
            "reward_margin": 0.5 * step,
            "logp_chosen": -50.0,
            "logp_rejected": -55.0,
        }
        for step in range(1, 5)
    ]
    evals = [
        {
            "kind": "eval",
            "step": step,
            "tokens": 512 * step,
            **dpo_values(step),
            "sample": f"Rewrite the sentence.\nreply at step {step}",
            "elapsed_s": 10.0 * step,
        }
        for step in (2, 4)
    ]
    records: list[dict[str, Any]] = [
        {"kind": "preference_before", "step": 0, **dpo_values(0)},
        train[0],
        train[1],
        evals[0],
        train[2],
        train[3],
        evals[1],
        {
            "kind": "end",
            "step": 4,
            "tokens": 2048,
            "elapsed_s": 40.0,
            "final_train_loss": 0.3,
            "best_val_loss": 0.25,
            "best_step": 2,
            "reason": "finished",
        },
    ]
    meta = {"finetune": {"base": "base/best"}, "dpo": {"loss": "sigmoid", "beta": 0.1}}
    return write_run(root, records, meta if metadata else None)


def test_dpo_report_shows_before_best_last_and_no_perplexity(tmp_path: Path) -> None:
    paths = write_report(dpo_run(tmp_path / "dpo"), bench=False)
    markdown = paths.markdown.read_text(encoding="utf-8")
    html = paths.html.read_text(encoding="utf-8")
    lines = lines_of(markdown)
    expected = [
        "## Post-training",
        "| loss | sigmoid |",
        "| beta | 0.1 |",
        "| measure | before training | best checkpoint (step 2) | last evaluation (step 4) "
        "| change (last - before) |",
        # before, best (step 2, the end record's best_step), last (step 4), last - before
        "| held-out preference accuracy | 0.4 | 0.7 | 0.6 | +0.2 |",
        "| held-out preference accuracy (per token) | 0.5 | 0.65 | 0.75 | +0.25 |",
        "| reward accuracy (chosen beats rejected) | 0 | 0.8 | 0.9 | +0.9 |",
        "| reward margin | 0 | 1.5 | 2.5 | +2.5 |",
        "| held-out preference loss | 0.6931 | 0.25 | 0.3 | -0.3931 |",
        "| 0 (before training) | 0.4 | 0.5 | 0 | 0 | 0.6931 |",
        "| 2 | 0.7 | 0.65 | 0.8 | 1.5 | 0.25 |",
        "| 4 | 0.6 | 0.75 | 0.9 | 2.5 | 0.3 |",
        # the per-step training curve: train reward accuracy 0.25 .. 1 over steps 1..4
        "| [reward accuracy (train)](report.html#plot-post-reward-accuracy) | ▁▃▆█ | 0.25 | 1 "
        "| 0.25 .. 1 |",
        "| [reward margin (held-out)](report.html#plot-post-reward-margin) | ▁▅█ | 0 | 2.5 "
        "| 0 .. 2.5 |",
        # the summary and the evaluations table name the loss; no perplexity column
        "| final train loss (preference loss) | 0.3 |",
        "| final validation loss (held-out preference loss) | 0.3 |",
        "| best validation loss (held-out preference loss) | 0.25 at step 2 |",
        "| step | tokens | held-out preference loss | time |",
        "| 2 | 1,024 | 0.25 | 20.0s |",
    ]
    for line in expected:
        assert line in lines, line
    assert "perplexity" not in markdown and "perplexity" not in html
    assert not has_nan(markdown) and not has_nan(html)
    assert '<h2 id="post-training">Post-training</h2>' in html
    for plot in ("post-reward-accuracy", "post-reward-margin", "post-preference-accuracy"):
        assert f'data-plot="{plot}"' in html, plot
    assert "<td>held-out preference accuracy</td><td>0.4</td><td>0.7</td><td>0.6</td>" in html
    assert "### Sample at step 4" in markdown


def test_dpo_kind_from_metadata_without_a_before_record(tmp_path: Path) -> None:
    """A run whose preference_before record is missing still is a DPO run (its checkpoint says
    so); the starting model's column says "not recorded" instead of inventing numbers."""
    run = dpo_run(tmp_path / "dpo")
    metrics = run / "metrics.jsonl"
    kept = [line for line in metrics.read_text().splitlines() if "preference_before" not in line]
    # an old trainer also logged exp(preference loss) as a "perplexity": never shown for DPO
    kept = [
        line.replace('"val_loss"', '"val_perplexity": 1.3, "val_loss"', 1)
        if '"eval"' in line
        else line
        for line in kept
    ]
    metrics.write_text("\n".join(kept) + "\n", encoding="utf-8")
    loaded = load_run(run)
    assert loaded.kind == "dpo" and loaded.before is None
    assert loaded.post_settings == {"loss": "sigmoid", "beta": 0.1}
    markdown = write_report(run, bench=False).markdown.read_text(encoding="utf-8")
    assert "| held-out preference accuracy | not recorded | 0.7 | 0.6 | not recorded |" in markdown
    assert "perplexity" not in markdown and "1.3" not in markdown


# An RL run (no checkpoint: its kind comes from the records), as rl.py writes it; the older
# trainer's NaN perplexity included, which must not show.
RL_SAMPLE = "What is 7 + 5? Use <b>digits</b>.\n-> {reply}  [reward {reward}]"


def rl_eval(
    step: int, pass_1: float, pass_k: float, sampled: float, reward: float
) -> dict[str, Any]:
    return {
        "step": step,
        "val_loss": 1.0 - pass_1,
        "val_perplexity": math.nan,
        "pass@1": pass_1,
        "pass@k": pass_k,
        "pass_k": 8,
        "sampled_pass@1": sampled,
        "reward_mean": reward,
        "greedy_reward_mean": pass_1,
        "sample": RL_SAMPLE.format(reply=str(step), reward=1 if pass_1 > 0.5 else 0),
    }


def rl_run(root: Path) -> Path:
    train = [
        {
            "kind": "train",
            "step": step,
            "tokens": 4096 * step,
            "loss": 0.0,
            "lr": 1e-5,
            "tokens_per_s": 800.0,
            "skipped_steps": 0,
            "reward_mean": 0.1 * step,
            "reward_std": 0.3,
            "signal_fraction": 0.5,
            "reply_tokens": 6.0,
        }
        for step in range(1, 7)
    ]
    records: list[dict[str, Any]] = [
        {"kind": "rl_before", **rl_eval(0, 0.1, 0.3, 0.05, 0.05)},
        *train[:3],
        {"kind": "eval", "tokens": 3 * 4096, "elapsed_s": 30.0, **rl_eval(3, 0.4, 0.6, 0.3, 0.3)},
        *train[3:],
        {"kind": "eval", "tokens": 6 * 4096, "elapsed_s": 60.0, **rl_eval(6, 0.75, 0.9, 0.6, 0.65)},
    ]
    return write_run(root, records)


def test_rl_report_shows_pass_rates_and_samples(tmp_path: Path) -> None:
    run = rl_run(tmp_path / "rl")
    loaded = load_run(run)
    assert loaded.kind == "rl" and loaded.before is not None and loaded.post_settings == {}
    paths = write_report(run, bench=False)
    markdown = paths.markdown.read_text(encoding="utf-8")
    html = paths.html.read_text(encoding="utf-8")
    lines = lines_of(markdown)
    expected = [
        # no end record: the best checkpoint is the lowest 1 - pass@1, step 6
        "| measure | before training | best checkpoint (step 6) | last evaluation (step 6) "
        "| change (last - before) |",
        "| pass@1 (greedy) | 0.1 | 0.75 | 0.75 | +0.65 |",
        "| pass@k (k=8) | 0.3 | 0.9 | 0.9 | +0.6 |",
        "| sampled pass@1 | 0.05 | 0.6 | 0.6 | +0.55 |",
        "| mean reward | 0.05 | 0.65 | 0.65 | +0.6 |",
        "| step | pass@1 (greedy) | pass@k (k=8) | sampled pass@1 | mean reward "
        "| mean reward (greedy) |",
        "| 3 | 0.4 | 0.6 | 0.3 | 0.3 | 0.4 |",
        "| [mean reward (train rollouts)](report.html#plot-post-reward) | ▁▂▄▅▇█ | 0.1 | 0.6 "
        "| 0.1 .. 0.6 |",
        "| [pass@k (k=8)](report.html#plot-post-pass-rates) | ▁▄█ | 0.3 | 0.9 | 0.3 .. 0.9 |",
        "| final validation loss (1 - pass@1) | 0.25 |",
        "| best validation loss (1 - pass@1) | 0.25 at step 6 |",
        "| step | tokens | 1 - pass@1 | time |",
        "| 6 | 24,576 | 0.25 | 1m 00s |",
        "### Sample before training (step 0)",
        "### Sample at step 6",
    ]
    for line in expected:
        assert line in lines, line
    # the samples (problem -> reply [reward]) are fenced in Markdown and escaped in HTML
    assert "```text\nWhat is 7 + 5? Use <b>digits</b>.\n-> 0  [reward 0]\n```" in markdown
    assert "```text\nWhat is 7 + 5? Use <b>digits</b>.\n-> 6  [reward 1]\n```" in markdown
    assert "Use &lt;b&gt;digits&lt;/b&gt;.\n-&gt; 6  [reward 1]</pre>" in html
    assert "<b>digits</b>" not in html
    assert "perplexity" not in markdown and "perplexity" not in html
    assert not has_nan(markdown) and not has_nan(html)
    for plot in ("post-reward", "post-pass-rates", "post-signal"):
        assert f'data-plot="{plot}"' in html, plot


def test_pretraining_report_keeps_its_perplexity_columns(tmp_path: Path) -> None:
    run = write_run(
        tmp_path / "pretrain",
        [
            {"kind": "train", "step": 1, "tokens": 100, "loss": 4.0, "lr": 1e-3},
            {"kind": "train", "step": 2, "tokens": 200, "loss": 3.5, "lr": 1e-3},
            {
                "kind": "eval",
                "step": 2,
                "tokens": 200,
                "val_loss": 3.0,
                "val_perplexity": math.exp(3.0),
                "val_bits_per_byte": 1.25,
                "sample": "Once upon a time",
                "elapsed_s": 5.0,
            },
        ],
        {"training": {"preset": "tiny"}},
    )
    assert load_run(run).kind is None
    paths = write_report(run, bench=False)
    markdown = paths.markdown.read_text(encoding="utf-8")
    lines = lines_of(markdown)
    for line in (
        "| step | tokens | val loss | perplexity | bits/byte | time |",
        "| 2 | 200 | 3 | 20.0855 | 1.25 | 5.0s |",
        "| final train loss | 3.5 |",
        "| final validation loss | 3 |",
        "| best validation loss | 3 at step 2 (perplexity 20.0855, 1.25 bits/byte) |",
        "| [train loss](report.html#plot-loss) | █▁ | 4 | 3.5 | 3.5 .. 4 |",
        "| [validation loss](report.html#plot-loss) | ▁ | 3 | 3 | 3 .. 3 |",
    ):
        assert line in lines, line
    assert "Post-training" not in markdown
    assert "post-training" not in paths.html.read_text(encoding="utf-8")
