"""Where training numbers go: metrics.jsonl (always), TensorBoard, Weights & Biases, loss.png."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

from scratchlm.errors import ScratchLMError
from scratchlm.io_utils import atomic_write_bytes, read_jsonl


class MetricsLogger:
    def __init__(
        self,
        run_dir: Path,
        *,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.run_dir = run_dir
        self.tensorboard_writer: Any = None
        self.wandb_run: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard_writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            except ImportError:
                warnings.warn(
                    "tensorboard is not installed; metrics go to metrics.jsonl only "
                    "(pip install tensorboard to get event files)",
                    stacklevel=2,
                )
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


def plot_loss_curve(run_dir: Path) -> Path | None:
    """Write run_dir/loss.png (training and validation loss over tokens) from metrics.jsonl."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    train = [(r["tokens"], r["loss"]) for r in records if r.get("kind") == "train" and "loss" in r]
    evals = [(r["tokens"], r["val_loss"]) for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        axes.plot(*zip(*train, strict=True), label="train loss", linewidth=1, alpha=0.8)
    if evals:
        axes.plot(*zip(*evals, strict=True), label="validation loss", marker="o", linewidth=2)
    axes.set_xlabel("tokens")
    axes.set_ylabel("loss (nats/token)")
    axes.set_title(run_dir.name)
    axes.grid(alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    target = run_dir / "loss.png"
    atomic_write_bytes(target, buffer.getvalue())
    return target
