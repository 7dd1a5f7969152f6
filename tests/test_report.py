"""`scratchlm report`: the HTML and Markdown pages of a real tiny training run (with hand-appended
backtrack, early-stop and end records), rendered in headless Chromium; and runs that lack fields."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scratchlm.cli import main
from scratchlm.data.stories.corpus import generate_stories
from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.examples import TaskSpec
from scratchlm.evaluation.scoring import BenchmarkReport, ScoringStats, TaskResult
from scratchlm.report import load_run, write_report
from scratchlm.report.svg import nice_ticks, thin
from scratchlm.training.benchmarks import benchmark_record
from scratchlm.training.run_config import TrainConfig
from scratchlm.training.trainer import train

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
INJECTION = "Once <b>bold</b> & <script>alert(1)</script> ```fence```"
STEPS = 24


def append(path: Path, *records: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real 24-step run, then the records a backtrack, early stop and end would add."""
    root = tmp_path_factory.mktemp("report")
    corpus = root / "stories.txt"
    corpus.write_text("\n<|endoftext|>\n".join(generate_stories(200, seed=3)), encoding="utf-8")
    run = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        # the autouse cache fixture is function-scoped; keep this module-scoped run hermetic too
        patch.setenv("SCRATCHLM_CACHE", str(root / "cache"))
        train(
            TrainConfig(
                preset="tiny",
                set=["n_layer=2", "d_model=32", "n_head=4", "ffn_hidden=64"],
                context_length=64,
                data=str(corpus),
                tokenizer="char",
                out=str(run),
                batch_size=4,
                max_steps=STEPS,
                eval_every=8,
                eval_tokens=1024,
                sample_tokens=12,
                save_every=100,
                warmup_steps=4,
                log_every=1,
                quiet=True,
                data_workers=1,
                seed=5,
            ),
            log=lambda _: None,
        )
    metrics = run / "metrics.jsonl"
    evals = [r for r in map(json.loads, metrics.read_text().splitlines()) if r["kind"] == "eval"]
    rewritten_eval = {**evals[1], "sample": INJECTION}  # same step: the last record wins
    append(
        metrics,
        rewritten_eval,
        {
            "kind": "backtrack",
            "step": 18,
            "restored_step": 16,
            "loss": 9.5,
            "moving_average": 3.1,
            "reason": "spike",
            "lr_scale": 0.5,
            "backtracks": 1,
        },
        {"kind": "skipped_batch", "step": 12, "loss": 7.5, "moving_average": 2.4},
        # steps 17 and 18 again, after the rewind: the curve must show these
        {"kind": "train", "step": 17, "tokens": 1, "loss": 2.25, "lr": 1e-4, "tokens_per_s": 9.0},
        {"kind": "train", "step": 18, "tokens": 2, "loss": 2.5, "lr": 1e-4, "tokens_per_s": 9.0},
        {"kind": "early_stop", "step": STEPS, "best_step": 16, "best_val_loss": 3.0, "patience": 2},
        {
            "kind": "end",
            "step": STEPS,
            "tokens": 12_345,
            "elapsed_s": 75.0,
            "final_train_loss": 2.75,
            "best_val_loss": 3.0,
            "best_step": 16,
            "stopped_early": True,
            "reason": "early stop: no improvement",
        },
    )
    yield run


@pytest.fixture(scope="module")
def report(run_dir: Path) -> Path:
    paths = write_report(run_dir, bench_tokens=8)
    assert paths.speed.error is None, paths.speed.error
    return paths.html


def test_curves_keep_the_last_record_of_each_step(run_dir: Path) -> None:
    run = load_run(run_dir)
    steps = [record["step"] for record in run.train]
    assert steps == list(range(1, STEPS + 1))  # one point per step, in step order
    by_step = {record["step"]: record for record in run.train}
    assert by_step[17]["loss"] == 2.25 and by_step[18]["loss"] == 2.5
    assert len(run.records) > len(run.train) + len(run.evals)  # nothing dropped from the log
    assert [record["step"] for record in run.evals] == [8, 16, 24]
    assert run.evals[1]["sample"] == INJECTION
    assert run.end is not None and run.end["tokens"] == 12_345
    assert run.resolved["model"]["d_model"] == 32


def test_html_is_self_contained_escaped_and_complete(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    # no scripts, stylesheets, images or frames loaded from anywhere
    assert "<script" not in html and "<link" not in html and "<iframe" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    # the sample is shown as text, escaped
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html
    for plot in ("loss", "lr", "tokens-per-s"):
        assert f'data-plot="{plot}"' in html
    assert 'data-event="backtrack"' in html
    assert "<td>spike</td>" in html and "<td>16</td>" in html  # the backtrack table row
    assert re.search(r"loss-spike batches skipped</t[dh]>\s*<td>1</td>", html)
    assert "12,345" in html and "1m 15s" in html  # from the end record
    assert "ended: early stop: no improvement" in html
    assert "yes, at step 24 (best step 16, patience 2)" in html
    assert "decode (batch 1)" in html and re.search(r"[\d,]+ tokens/s", html)
    assert "training FLOPs per token" in html


def test_markdown_holds_the_same_facts(report: Path) -> None:
    markdown = report.with_suffix(".md").read_text(encoding="utf-8")
    assert "| 18 | 16 | spike | 9.5 | 3.1 | 0.5 | 1 |" in markdown
    assert "[train loss](report.html#plot-loss)" in markdown
    # the sample sits in a fence longer than its own ``` run, so it cannot break out
    assert f"````text\n{INJECTION}\n````" in markdown
    for heading in ("Summary", "Hardware", "Curves", "Benchmarks", "Inference speed"):
        assert f"## {heading}" in markdown
    assert "## Configuration" in markdown
    assert "no benchmark tasks scored during training (--eval-tasks)" in markdown


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt install chromium)")
def test_report_renders_in_chromium(report: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            requests: list[str] = []
            errors: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(report.resolve().as_uri())
            # A picture for a person to look at, not asserted on. Headless Chromium on a loaded
            # 2-core machine once failed a full-page capture ("Unable to capture screenshot")
            # of a page that rendered: a second try.
            for attempt in range(2):
                try:
                    page.screenshot(path=str(report.with_suffix(".png")), full_page=True)
                    break
                except sync_api.Error:
                    if attempt == 1:
                        raise
            for plot in ("loss", "lr", "tokens-per-s"):
                svg = page.locator(f'svg[data-plot="{plot}"]')
                assert svg.count() == 1, plot
                box = svg.bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 100, (plot, box)
                line = svg.locator("polyline").first
                line_box = line.bounding_box()
                assert line_box is not None and line_box["width"] > 100, (plot, line_box)
                points = line.get_attribute("points") or ""
                assert len(points.split()) == STEPS, plot  # one point per step
            loss = page.locator('svg[data-plot="loss"]')
            assert loss.locator('line[data-event="backtrack"]').count() == 1
            assert loss.locator("circle").count() == 3  # one marker per evaluation
            sample = page.locator("pre.sample", has_text="bold").inner_text()
            assert sample == INJECTION  # shown literally, nothing interpreted as markup
        finally:
            browser.close()
    assert errors == []
    assert requests == [report.resolve().as_uri()]  # the page itself, nothing else


def test_a_sparse_run_degrades_to_not_recorded(tmp_path: Path) -> None:
    """An old-style run: metrics.jsonl only (MFU logged), no config, no checkpoint."""
    run = tmp_path / "old"
    run.mkdir()
    append(
        run / "metrics.jsonl",
        *(
            {"kind": "train", "step": step, "loss": 5.0 - step / 10, "mfu": 0.01 * step}
            for step in range(1, 11)
        ),
    )
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"kind": "train", "step": 11, "lo')  # a line cut by a crash
    paths = write_report(run, out=tmp_path / "reports")
    html = paths.html.read_text(encoding="utf-8")
    assert paths.html.parent == tmp_path / "reports"
    assert paths.speed.error is not None and "no checkpoint" in paths.speed.error
    assert "not measured: no checkpoint" in html
    assert 'data-plot="mfu"' in html and "5.50%" in html  # median MFU of 1%..10%
    assert "run_config.json: not recorded" in html
    assert "no end record" in html
    assert 'data-plot="lr"' in html and "not recorded</text>" in html  # empty plot says so


def scored(arc_acc_norm: float, lambada_acc: float) -> BenchmarkReport:
    """What the scorer returns for ARC-Easy (chance 1/4) and LAMBADA (chance 0), 200 examples."""
    return BenchmarkReport(
        [
            TaskResult(
                TaskSpec("arc_easy", "multiple_choice", 0.25),
                200,
                {"acc": 0.3, "acc_norm": arc_acc_norm},
            ),
            TaskResult(
                TaskSpec("lambada", "last_word", 0.0), 200, {"acc": lambada_acc, "perplexity": 80.0}
            ),
        ],
        ScoringStats(tokens=1000, seconds=1.5),
    )


def test_benchmarks_from_training_and_from_saved_eval_json(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    # Evaluation records as the trainer writes them with --eval-tasks.
    append(
        run / "metrics.jsonl",
        {"kind": "train", "step": 1, "loss": 5.0},
        {"kind": "eval", "step": 100, "val_loss": 4.0, **benchmark_record(scored(0.25, 0.0))},
        {"kind": "eval", "step": 200, "val_loss": 3.0, **benchmark_record(scored(0.55, 0.1))},
    )
    # `scratchlm eval --tasks ... --json > RUN/eval/best.json`, and a JSON file that is not one.
    (run / "eval").mkdir()
    hand = {**scored(0.7, 0.2).as_dict(), "checkpoint": "run/best", "num_fewshot": 0, "limit": None}
    (run / "eval" / "best.json").write_text(json.dumps(hand), encoding="utf-8")
    (run / "eval" / "notes.json").write_text("[1, 2]", encoding="utf-8")
    paths = write_report(run, bench=False)
    markdown = paths.markdown.read_text(encoding="utf-8")
    # centered = (value - chance) / (1 - chance); the aggregate is their mean
    expected_lines = [
        "At step 200 (zero-shot, the first --eval-tasks-limit examples per task):",
        "| task | metric | value | chance | centered | examples |",
        "| arc_easy | acc_norm | 0.5500 | 0.25 | 0.4000 | 200 |",
        "| lambada | acc | 0.1000 | 0 | 0.1000 | 200 |",
        "| centered aggregate |  |  |  | 0.2500 |  |",
        "| step | arc_easy | lambada | aggregate |",
        "| 100 | 0.0000 | 0.0000 | 0.0000 |",
        "| 200 | 0.4000 | 0.1000 | 0.2500 |",
        "### eval/best.json",
        "checkpoint run/best, 0-shot, limit none",
        "| arc_easy | acc_norm | 0.7000 | 0.25 | 0.6000 | 200 |",
        "| centered aggregate |  |  |  | 0.4000 |  |",
        "| [centered aggregate](report.html#plot-benchmarks) |",
    ]
    lines = markdown.splitlines()
    for expected in expected_lines:
        assert any(line.startswith(expected) for line in lines), expected
    assert "notes.json" not in markdown
    html = paths.html.read_text(encoding="utf-8")
    assert 'data-plot="benchmarks"' in html and '<h2 id="benchmarks">Benchmarks</h2>' in html
    assert "<td>arc_easy</td><td>acc_norm</td><td>0.5500</td><td>0.25</td><td>0.4000</td>" in html
    assert "<h3>eval/best.json</h3>" in html


def test_nice_ticks_and_thinning() -> None:
    assert nice_ticks(0.0, 10.0) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    ticks = nice_ticks(2.93, 4.81)
    assert ticks[0] <= 2.93 and ticks[-1] >= 4.81 and len(ticks) <= 7
    assert nice_ticks(3.0, 3.0)[0] < 3.0 < nice_ticks(3.0, 3.0)[-1]  # flat series
    points = [(float(i), 1.0) for i in range(10_000)]
    points[5000] = (5000.0, 99.0)  # a spike
    thinned = thin(points, limit=200)
    assert len(thinned) <= 202 and (5000.0, 99.0) in thinned and thinned[-1] == points[-1]


def test_missing_run_dir_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "does not exist" in err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    append(tmp_path / "empty" / "metrics.jsonl", {"kind": "train", "step": 1, "loss": 1.0})
    with pytest.raises(ScratchLMError, match="--bench-tokens"):
        write_report(tmp_path / "empty", bench_tokens=1)


def test_report_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "RUN_DIR" in text and "--no-bench" in text and "default: 32" in text
