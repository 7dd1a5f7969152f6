"""`scratchlm report RUN_DIR`: one self-contained HTML page and one Markdown page per run.

They hold the config, the hardware, the loss / validation / learning-rate / tokens-per-second / MFU
curves with backtrack markers, the backtracking events, the benchmark tasks scored during training
(--eval-tasks) and by hand (`scratchlm eval --tasks --json` saved as RUN/eval/*.json), the samples
of each evaluation, the final metrics and the inference speed of the final model; for a DPO or RL
run (its checkpoint's metadata, or its records, say which) also a Post-training section: the
held-out measures before training, at each evaluation, at the best checkpoint and the last, with
their training curves. Layout of the package:

- `run.py`: read run_config.json, metrics.jsonl and eval/*.json (every field optional)
- `content.py`: what the report says (rows and chart specs), shared by both formats
- `svg.py`: inline SVG line charts; `page.py`: HTML; `markdown.py`: Markdown
- `speed.py`: inference speed through `scratchlm bench`'s `run_benchmark`
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from scratchlm import __version__
from scratchlm.io_utils import atomic_write_text
from scratchlm.report.markdown import render_markdown
from scratchlm.report.page import render_html
from scratchlm.report.run import RunData, load_run
from scratchlm.report.speed import DEFAULT_NEW_TOKENS, InferenceSpeed, measure_inference_speed

HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"


@dataclass
class ReportPaths:
    html: Path
    markdown: Path
    speed: InferenceSpeed


def report_paths(run_dir: Path, out: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """Where the two files go: RUN_DIR by default; `out` is a directory, or a file name whose
    stem both files share (`--out reports/run1.html` gives run1.html and run1.md)."""
    if out is None:
        return run_dir / HTML_FILE, run_dir / MARKDOWN_FILE
    target = Path(out)
    if target.suffix.lower() in (".html", ".htm", ".md"):
        return target.with_suffix(".html"), target.with_suffix(".md")
    return target / HTML_FILE, target / MARKDOWN_FILE


def write_report(
    run_dir: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    bench: bool = True,
    bench_tokens: int = DEFAULT_NEW_TOKENS,
) -> ReportPaths:
    """Write report.html and report.md for a run (atomically); returns their paths."""
    run: RunData = load_run(run_dir)
    speed = (
        measure_inference_speed(run.run_dir, bench_tokens)
        if bench
        else InferenceSpeed(skipped=True)
    )
    generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    html_path, markdown_path = report_paths(run.run_dir, out)
    atomic_write_text(html_path, render_html(run, speed, generated=generated, version=__version__))
    # The Markdown links to the HTML by a path relative to itself.
    html_link = os.path.relpath(html_path, markdown_path.parent)
    atomic_write_text(
        markdown_path,
        render_markdown(run, speed, generated=generated, version=__version__, html_name=html_link),
    )
    return ReportPaths(html=html_path, markdown=markdown_path, speed=speed)


__all__ = ["ReportPaths", "load_run", "write_report"]
