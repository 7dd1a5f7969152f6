"""The optimizers: Muon's orthogonalization, its split of parameters, and its AdamW half."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from scratchlm.model import build_model
from scratchlm.training import optim
from scratchlm.training.distributed import full_optimizer_state, load_full_optimizer_state
from scratchlm.training.optim import MuonAdamW, build_optimizer, orthogonalize
from tests.conftest import tiny_config


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_orthogonalize_flattens_the_singular_values(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    # both iteration dtypes (bf16 is the default on GPUs)
    monkeypatch.setattr(optim, "newton_schulz_dtype", lambda device_type: dtype)
    generator = torch.Generator().manual_seed(0)
    for rows, columns in ((64, 32), (32, 96)):
        # an ill-conditioned matrix: singular values from 0.01 to 10
        left, _ = torch.linalg.qr(torch.randn(rows, rows, generator=generator))
        right, _ = torch.linalg.qr(torch.randn(columns, columns, generator=generator))
        rank = min(rows, columns)
        spread = torch.logspace(-2, 1, rank)
        matrix = left[:, :rank] @ torch.diag(spread) @ right[:rank, :]
        result = orthogonalize(matrix)
        singular = torch.linalg.svdvals(result)
        # quintic Newton-Schulz pushes the singular values towards 1: most land in about
        # [0.7, 1.2], and a condition number of 1000 shrinks to a few
        assert result.shape == matrix.shape and result.dtype == torch.float32
        assert singular.max() < 1.3 and 0.7 < singular.median() < 1.2, singular
        assert singular.max() / singular.min() < 5, singular


def test_muon_takes_the_block_matrices_and_adamw_the_rest() -> None:
    model = build_model(tiny_config("tiny"))
    optimizer = build_optimizer(
        model,
        learning_rate=1e-3,
        weight_decay=0.1,
        betas=(0.9, 0.95),
        device=torch.device("cpu"),
        kind="muon",
    )
    assert isinstance(optimizer, MuonAdamW)
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    muon = [names[id(p)] for g in optimizer.param_groups if g["use_muon"] for p in g["params"]]
    adam = [names[id(p)] for g in optimizer.param_groups if not g["use_muon"] for p in g["params"]]
    assert muon and all(name.startswith("blocks.") and "norm" not in name for name in muon)
    assert "token_embedding.weight" in adam
    assert len(muon) + len(adam) == len(list(model.parameters()))


def test_the_adamw_half_matches_torch_adamw() -> None:
    torch.manual_seed(0)
    reference = torch.nn.Linear(8, 4)
    ours = copy.deepcopy(reference)
    torch_adamw = torch.optim.AdamW(
        reference.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1
    )
    muon_adamw = MuonAdamW(
        [
            {
                "params": list(ours.parameters()),
                "use_muon": False,
                "weight_decay": 0.1,
                "betas": (0.9, 0.95),
            }
        ],
        learning_rate=1e-2,
    )
    inputs = torch.randn(16, 8)
    for _ in range(5):
        for module, optimizer in ((reference, torch_adamw), (ours, muon_adamw)):
            optimizer.zero_grad()
            module(inputs).pow(2).mean().backward()
            optimizer.step()
    for expected, found in zip(reference.parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-6)


def test_muon_trains_and_its_state_round_trips() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config("tiny"))
    optimizer = build_optimizer(
        model,
        learning_rate=1e-2,
        weight_decay=0.0,
        betas=(0.9, 0.95),
        device=torch.device("cpu"),
        kind="muon",
    )
    inputs = torch.randint(0, 97, (4, 32))
    losses = []
    for _ in range(30):
        logits = model(inputs)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), inputs[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    optimizer.zero_grad(set_to_none=True)  # as the trainer leaves it between steps
    saved = full_optimizer_state(model, optimizer)
    fresh = build_optimizer(
        model,
        learning_rate=1e-2,
        weight_decay=0.0,
        betas=(0.9, 0.95),
        device=torch.device("cpu"),
        kind="muon",
    )
    load_full_optimizer_state(model, fresh, saved)
    for group_old, group_new in zip(optimizer.param_groups, fresh.param_groups, strict=True):
        for old, new in zip(group_old["params"], group_new["params"], strict=True):
            for key, value in optimizer.state[old].items():
                assert torch.equal(fresh.state[new][key], value)
