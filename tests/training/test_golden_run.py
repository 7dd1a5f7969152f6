"""A fixed, seeded training run against its recorded loss curve and final weights.

Refactors move code, never numbers: the same run must give the same bits before and after. The
record (`golden_run.json`) holds every step's training loss as an exact float and a SHA-256 of
the final weights. Bits depend on the kernels PyTorch picks, so the exact comparison applies on
the machine kind the record was made on (same torch version and CPU capability, as in CI);
elsewhere the losses must agree to 1e-4 and the weights hash is not compared.

To record anew after a change that is meant to move numbers (say so in the commit):
`SCRATCHLM_RECORD_GOLDEN=1 pytest tests/training/test_golden_run.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from scratchlm.training.trainer import train
from tests.conftest import SAMPLE_TEXT
from tests.training.helpers import tiny_run, train_losses

RECORD = Path(__file__).with_name("golden_run.json")


def weights_sha256(checkpoint: Path) -> str:
    digest = hashlib.sha256()
    state = load_file(str(checkpoint / "model.safetensors"))
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def machine() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def test_a_seeded_run_gives_the_recorded_bits(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SAMPLE_TEXT * 40, encoding="utf-8")
    # The default optimizer (Muon + AdamW), dropout (RNG), evaluation and a checkpoint mid-run.
    config = tiny_run(
        corpus,
        tmp_path / "run",
        max_steps=16,
        eval_every=8,
        save_every=8,
        dropout=0.1,
        threads=1,
        log_every=1,
    )
    result = train(config, log=lambda message: None)
    losses = {
        str(step): loss.hex() for step, loss in sorted(train_losses(tmp_path / "run").items())
    }
    found = {"losses": losses, "weights_sha256": weights_sha256(Path(result.checkpoint))}
    if os.environ.get("SCRATCHLM_RECORD_GOLDEN") == "1":
        RECORD.write_text(json.dumps({**machine(), **found}, indent=2) + "\n", encoding="utf-8")
    record = json.loads(RECORD.read_text(encoding="utf-8"))
    assert found["losses"].keys() == record["losses"].keys()
    if all(record[key] == value for key, value in machine().items()):
        assert found == {key: record[key] for key in found}
    else:
        for step, expected in record["losses"].items():
            assert math.isclose(
                float.fromhex(found["losses"][step]), float.fromhex(expected), rel_tol=1e-4
            ), step
