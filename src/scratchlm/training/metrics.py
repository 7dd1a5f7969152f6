"""Where training numbers go: metrics.jsonl (always), TensorBoard (--tensorboard), Weights & Biases
(--wandb), the loss chart loss.svg, and the console (a progress bar, or log lines when output is
not a terminal)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from scratchlm.errors import ScratchLMError
from scratchlm.io_utils import atomic_write_bytes, read_jsonl
from scratchlm.report.svg import COLORS, Series, line_chart
from scratchlm.training.benchmarks import summary_line

LOSS_CHART_FILE = "loss.svg"


class MetricsLogger:
    def __init__(
        self,
        run_dir: Path,
        *,
        tensorboard: bool = False,
        wandb_project: str | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.run_dir = run_dir
        self.tensorboard_writer: Any = None
        self.wandb_run: Any = None
        if tensorboard:
            # Imported only when asked for: tensorboard is an extra (pip install 'scratchlm[tensorboard]').
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ScratchLMError(
                    "--tensorboard needs the tensorboard package; install it with "
                    "`pip install 'scratchlm[tensorboard]'` or drop --tensorboard"
                ) from None
            self.tensorboard_writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise ScratchLMError(
                    "--wandb needs the wandb package; install it with `pip install wandb` or drop --wandb"
                ) from None
            self.wandb_run = wandb.init(project=wandb_project, config=run_config, dir=str(run_dir))

    def log(self, record: dict[str, Any]) -> None:
        # Appending one line per record: a crash loses at most the line being written.
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        step = int(record.get("step", 0))
        kind = record.get("kind", "train")
        numbers = {
            key: value
            for key, value in record.items()
            if isinstance(value, (int, float)) and key not in ("step", "kind")
        }
        if self.tensorboard_writer is not None:
            for key, value in numbers.items():
                self.tensorboard_writer.add_scalar(f"{kind}/{key}", value, step)
            if "sample" in record:
                self.tensorboard_writer.add_text("samples", str(record["sample"]), step)
        if self.wandb_run is not None:
            self.wandb_run.log(
                {f"{kind}/{key}": value for key, value in numbers.items()}, step=step
            )

    def close(self) -> None:
        if self.tensorboard_writer is not None:
            self.tensorboard_writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


class NoMetrics:
    """What ranks other than 0 log to: nothing."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


# The report page styles its charts with CSS; a chart in a file of its own carries the same rules.
_CHART_STYLE = (
    "<style>svg.plot { font-family: sans-serif; font-size: 11px; background: #fff; } "
    ".frame { fill: none; stroke: #999; } .grid { stroke: #eee; } "
    ".tick, .legend { fill: #444; } .axis-label { fill: #333; font-size: 12px; } "
    ".plot-title { font-weight: 600; font-size: 13px; fill: #222; } "
    ".event { stroke-width: 1.2; stroke-dasharray: 4 3; } .empty { fill: #999; }</style>"
)


def plot_loss_curve(run_dir: Path) -> Path | None:
    """Write run_dir/loss.svg (training and validation loss over steps) from metrics.jsonl, with
    the report's SVG chart code (no plotting library)."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and "loss" in r]
    evals = [(r["step"], r["val_loss"]) for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    chart = line_chart(
        "loss",
        f"{run_dir.name}: loss",
        [
            Series("train loss", train, COLORS[0]),
            Series("validation loss", evals, COLORS[1], markers=True),
        ],
        x_label="step",
        y_label="loss (nats/token)",
    )
    opening, rest = chart.split("\n", 1)
    svg = opening.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    target = run_dir / LOSS_CHART_FILE
    atomic_write_bytes(target, f"{svg}\n{_CHART_STYLE}\n{rest}\n".encode())
    return target


class Progress:
    """The console side of a run: a progress bar (0..1 of the budget) with the latest numbers
    when stderr is a terminal, else a log line every 10 logging intervals. Messages clear the bar
    first so that they do not interleave with it."""

    def __init__(self, log: Callable[[str], None], *, enabled: bool, log_every: int) -> None:
        self.log = log
        self.log_every = log_every
        self.interactive = enabled and sys.stderr.isatty()
        self.bar = tqdm(
            total=1000,
            disable=not self.interactive,
            leave=True,
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
        )

    def train_step(
        self, step: int, loss: float, learning_rate: float, tokens_per_s: float, elapsed: float
    ) -> None:
        """At each logged step: the bar's numbers, or a line every 10 logging intervals."""
        self.bar.set_postfix_str(
            f"step {step} loss {loss:.4f} lr {learning_rate:.2e} {tokens_per_s:,.0f} tok/s",
            refresh=False,
        )
        if not self.interactive and step % (self.log_every * 10) == 0:
            self.log(
                f"step {step:>6} | loss {loss:.4f} | lr {learning_rate:.2e} | "
                f"{tokens_per_s:,.0f} tok/s | {elapsed:.0f}s"
            )

    def advance(self, fraction: float) -> None:
        self.bar.n = min(1000, int(fraction * 1000))
        self.bar.refresh()

    def evaluation(
        self,
        step: int,
        evaluation: dict[str, float],
        sample: str,
        *,
        improved: bool,
        tasks: dict[str, Any] | None = None,
    ) -> None:
        """The evaluation's lines; `tasks`: --eval-tasks' fields (benchmarks.benchmark_record)."""
        details = []
        if "val_perplexity" in evaluation:
            details.append(f"ppl {evaluation['val_perplexity']:.2f}")
        if "val_bits_per_byte" in evaluation:
            details.append(f"{evaluation['val_bits_per_byte']:.3f} bits/byte")
        # what other trainers measure (preference accuracy, pass@1, ...), by name
        shown = {"val_loss", "val_perplexity", "val_bits_per_byte"}
        details += [
            f"{name.removeprefix('val_').replace('_', ' ')} {value:.4g}"
            for name, value in evaluation.items()
            if name not in shown and isinstance(value, (int, float))
        ]
        line = (
            f"eval step {step}: val loss {evaluation['val_loss']:.4f}"
            + (f" ({', '.join(details)})" if details else "")
            + (" *best*" if improved else "")
        )
        self.bar.clear()
        self.log(line)
        if tasks:
            self.log("  " + summary_line(tasks))
        if sample:
            self.log("  sample: " + sample.strip().replace("\n", "\n          ")[:600])
        self.bar.refresh()

    def clear(self) -> None:
        self.bar.clear()

    def close(self) -> None:
        self.bar.close()
