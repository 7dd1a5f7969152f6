"""metrics.jsonl's companions: the loss chart (SVG, no plotting library) and opt-in TensorBoard."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from scratchlm.errors import ScratchLMError
from scratchlm.training.metrics import MetricsLogger, plot_loss_curve


def test_the_loss_chart_is_a_standalone_svg_of_both_losses(tmp_path: Path) -> None:
    assert plot_loss_curve(tmp_path) is None  # nothing logged yet: no chart
    logger = MetricsLogger(tmp_path)
    for step in range(1, 21):
        logger.log({"kind": "train", "step": step, "tokens": 64 * step, "loss": 4.0 - step / 10})
    logger.log({"kind": "eval", "step": 20, "tokens": 1280, "val_loss": 2.5})
    logger.close()
    chart = plot_loss_curve(tmp_path)
    assert chart == tmp_path / "loss.svg"
    root = ElementTree.fromstring(chart.read_text(encoding="utf-8"))  # well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    series = {line.get("data-series") for line in root.iter("{http://www.w3.org/2000/svg}polyline")}
    assert series == {"train loss", "validation loss"}
    assert not (tmp_path / "tensorboard").exists()  # TensorBoard is opt-in


def test_tensorboard_without_the_package_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ScratchLMError, match=r"scratchlm\[tensorboard\]") as caught:
        MetricsLogger(tmp_path, tensorboard=True)
    assert "\n" not in str(caught.value)


def test_records_are_json_lines(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path)
    logger.log({"kind": "end", "step": 3, "reason": "finished"})
    logger.close()
    lines = (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"kind": "end", "step": 3, "reason": "finished"}
    ]
