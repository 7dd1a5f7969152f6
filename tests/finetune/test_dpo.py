from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from scratchlm.chat_template import Message
from scratchlm.checkpoint import load_checkpoint
from scratchlm.cli import main
from scratchlm.errors import ScratchLMError
from scratchlm.finetune import dpo as preference
from scratchlm.finetune.datasets import Example
from scratchlm.finetune.dpo import (
    REFERENCE_FILE,
    DPOSettings,
    DPOTrainer,
    PreferencePair,
    TokenizedPair,
    collate_pairs,
    preference_loss,
    read_preferences,
    reference_logprobs,
    sequence_logprobs,
    tokenize_pairs,
)
from scratchlm.finetune.settings import DPO_LORA_LR
from scratchlm.io_utils import read_jsonl
from scratchlm.tokenizer import END_OF_TURN_TOKEN, Tokenizer
from scratchlm.training.run_config import TrainConfig

ANIMALS = ["cat", "dog", "fox", "bird", "frog", "duck", "cow", "pig", "hen", "owl"]
COLORS = ["red", "blue", "green", "yellow", "pink", "black"]


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.fixture
def preferences(tmp_path: Path) -> Path:
    """An easy, consistent preference: the chosen reply names the animal's colour plainly, the
    rejected one refuses. The seeded base model prefers the refusal before training (asserted
    in the test that trains on it)."""
    records: list[dict[str, object]] = []
    for index, (animal, color) in enumerate((a, c) for a in ANIMALS for c in COLORS):
        question = f"What color is the {animal}?"
        chosen, rejected = f"The {animal} is {color}.", "I will not say."
        if index % 3 == 0:
            records.append({"prompt": question, "chosen": chosen, "rejected": rejected})
        elif index % 3 == 1:
            records.append(
                {"instruction": question, "input": "", "chosen": chosen, "rejected": rejected}
            )
        else:
            records.append(
                {
                    "chosen": [
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": chosen},
                    ],
                    "rejected": [
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": rejected},
                    ],
                }
            )
    return write_jsonl(tmp_path / "prefs.jsonl", records)


def config(out: Path, data: Path, **extra: object) -> TrainConfig:
    values: dict[str, object] = {
        "data": str(data),
        "out": str(out),
        "batch_size": 8,
        "max_steps": 30,
        "eval_every": 10,
        "save_every": 100,
        "warmup_steps": 3,
        "quiet": True,
        "sample_tokens": 4,
        "lr": 3e-3,
        "seed": 5,
        "val_fraction": 0.2,
    }
    values.update(extra)
    return TrainConfig(**values)  # type: ignore[arg-type]


# --- the loss -------------------------------------------------------------------------------------


def test_loss_equals_the_formulas_on_a_hand_computed_example() -> None:
    pc, pr, rc, rr = (torch.tensor([value]) for value in (-5.0, -7.0, -6.0, -6.0))
    lengths: dict[str, Any] = {
        "chosen_lengths": torch.tensor([4]),
        "rejected_lengths": torch.tensor([2]),
    }
    # sigmoid, beta 0.1: margin = 0.1 * ((-5 + 6) - (-7 + 6)) = 0.2
    loss, metrics = preference_loss(pc, pr, rc, rr, kind="sigmoid", beta=0.1)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.2)), rel=1e-6)
    assert metrics["reward_margin"].item() == pytest.approx(0.2, rel=1e-6)
    assert metrics["reward_accuracy"].item() == 1.0
    # ipo, beta 0.1, on averages: (1/4 - (-1/2) - 1/(2*0.1))^2 = (0.75 - 5)^2
    loss, metrics = preference_loss(pc, pr, rc, rr, kind="ipo", beta=0.1, **lengths)
    assert loss.item() == pytest.approx(4.25**2, rel=1e-6)
    assert metrics["reward_margin"].item() == pytest.approx(0.075, rel=1e-6)
    # simpo, beta 2, gamma 0.5: 2 * (-5/4 - (-7/2)) - 0.5 = 4
    loss, metrics = preference_loss(pc, pr, rc, rr, kind="simpo", beta=2.0, gamma=0.5, **lengths)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-4.0)), rel=1e-6)
    # the reference plays no part in simpo
    again, _ = preference_loss(pc, pr, rc + 3, rr - 1, kind="simpo", beta=2.0, **lengths)
    assert again.item() == loss.item()
    # a rejected reply the policy likes better than the reference does: reward accuracy 0
    _, metrics = preference_loss(pc, pr + 3, rc, rr, kind="sigmoid", beta=0.1)
    assert metrics["reward_accuracy"].item() == 0.0
    with pytest.raises(ValueError, match="lengths"):
        preference_loss(pc, pr, rc, rr, kind="ipo", beta=0.1)


def test_identical_replies_give_zero_gradient(base: Path, bpe_tokenizer: Tokenizer) -> None:
    model = load_checkpoint(base).model
    prompt: list[Message] = [{"role": "user", "content": "Name a colour."}]
    pair = PreferencePair(prompt, "Red, I think.", "Red, I think.", "x")
    # tokenize_pairs leaves identical pairs out; build the rows directly
    tokenized, notes = tokenize_pairs([pair], bpe_tokenizer, 64)
    assert not tokenized and notes.identical == 1

    def side(reply: str) -> Example:
        ids, mask, _ = preference.render_side(prompt, reply, bpe_tokenizer)
        return Example(ids, mask)

    def gradient_norm(chosen: Example, rejected: Example, kind: str) -> float:
        batch = collate_pairs([TokenizedPair(chosen, rejected, [])], [0], None, 0)
        model.zero_grad()
        sums, counts = sequence_logprobs(
            model(batch.inputs), batch.targets, model.config.vocab_size
        )
        loss, _ = preference_loss(
            sums[:1],
            sums[1:],
            torch.tensor([-3.0]),
            torch.tensor([-3.0]),
            kind=kind,
            beta=0.5,
            chosen_lengths=counts[:1],
            rejected_lengths=counts[1:],
        )
        assert loss.item() > 0
        loss.backward()
        grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        return float(torch.cat(grads).norm())

    # the scale of one reply's gradient: what a loss that did not cancel would leave
    model.zero_grad()
    batch = collate_pairs([TokenizedPair(side(pair.chosen), side(pair.chosen), [])], [0], None, 0)
    sequence_logprobs(model(batch.inputs), batch.targets, model.config.vocab_size)[0][0].backward()
    one_reply = float(
        torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm()
    )
    for kind in ("sigmoid", "ipo", "simpo"):
        same = gradient_norm(side(pair.chosen), side(pair.rejected), kind)
        # float32 rounding leaves ~1e-7 of the two rows' cancelling gradients
        assert same < 1e-4 * one_reply, (kind, same, one_reply)


# --- data -----------------------------------------------------------------------------------------


def test_masks_cover_only_the_final_reply(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    system = {"role": "system", "content": "Be brief."}
    records: list[dict[str, object]] = [
        {"prompt": "Is the cat red?", "chosen": "Yes.", "rejected": "No, it is blue."},
        {
            "prompt": [system, {"role": "user", "content": "Hi"}],
            "chosen": "Hello there.",
            "rejected": "Go away.",
        },
        {"instruction": "Add", "input": "2 and 3", "output": "5", "chosen": "5", "rejected": "6"},
        {
            # ShareGPT turns, two rounds: the first reply is context, not trained
            "chosen": [
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello, first answer."},
                {"from": "human", "value": "And the dog?"},
                {"from": "gpt", "value": "The dog is brown."},
            ],
            "rejected": [
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello, first answer."},
                {"from": "human", "value": "And the dog?"},
                {"from": "gpt", "value": " leading space reply"},
            ],
        },
        {
            "prompt": "ignored: the conversations hold the user turn",
            "chosen": [
                system,
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "A"},
            ],
            "rejected": [
                system,
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "B"},
            ],
        },
    ]
    pairs = read_preferences(write_jsonl(tmp_path / "shapes.jsonl", records))
    assert pairs[2].prompt == [{"role": "user", "content": "Add\n\n2 and 3"}]
    assert pairs[3].prompt[1] == {"role": "assistant", "content": "Hello, first answer."}
    assert pairs[4].prompt[0] == system and (pairs[4].chosen, pairs[4].rejected) == ("A", "B")
    tokenized, notes = tokenize_pairs(pairs, bpe_tokenizer, 64)
    assert len(tokenized) == len(pairs) and notes.cut == notes.dropped == 0
    end_id = bpe_tokenizer.special_id(END_OF_TURN_TOKEN)
    for pair, sides in zip(pairs, tokenized, strict=True):
        for reply, side in ((pair.chosen, sides.chosen), (pair.rejected, sides.rejected)):
            learned = [token for token, bit in zip(side.ids, side.mask, strict=True) if bit]
            assert learned[-1] == end_id
            # the learned tokens spell the reply (v2's newline after <|assistant|> may merge
            # with a reply that starts with whitespace)
            assert bpe_tokenizer.decode(learned[:-1]).lstrip("\n") == reply.lstrip("\n")
            first = side.mask.index(1)
            assert first >= len(sides.prompt_ids) - 1
            assert side.ids[:first] == sides.prompt_ids[:first]
    # a batch: chosen rows first, targets -100 exactly off the masks
    batch = collate_pairs(tokenized[:3], [0, 1, 2], None, bpe_tokenizer.pad_id)
    assert batch.inputs.shape[0] == batch.targets.shape[0] == 6
    for row, side in enumerate(
        [p.chosen for p in tokenized[:3]] + [p.rejected for p in tokenized[:3]]
    ):
        kept = batch.targets[row][batch.targets[row] != -100].tolist()
        assert kept == [t for t, bit in zip(side.ids[1:], side.mask[1:], strict=True) if bit]
    # over-long pairs are cut; a pair whose reply starts beyond the context is dropped
    long_prompt = PreferencePair([{"role": "user", "content": "word " * 80}], "a", "b", "x")
    cut_pair = PreferencePair([{"role": "user", "content": "Hi"}], "long " * 80, "short", "y")
    kept, notes = tokenize_pairs([long_prompt, cut_pair], bpe_tokenizer, 16)
    assert len(kept) == 1 and notes.dropped == 1 and notes.cut == 2
    assert len(kept[0].chosen.ids) == 17


def test_bad_records_name_their_line(
    tmp_path: Path, base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    cases = {
        '{"prompt": "p", "chosen": "a"}': "needs 'chosen' and 'rejected'",
        '{"chosen": "a", "rejected": "b"}': "no 'prompt' or 'instruction'",
        '{"prompt": "p", "chosen": "a", "rejected": ["x"]}': "both be strings or both",
        '{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],'
        ' "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]}': "differ before their final",
        '{"chosen": [{"role": "user", "content": "q"}], "rejected": [{"role": "user", "content": "q"}]}': "must end with the assistant",
        '{"prompt": [{"role": "assistant", "content": "q"}], "chosen": "a", "rejected": "b"}': "must end with a user message",
        '{"prompt": "p", "chosen": "a", "rejected": "b"': "not valid JSON",
    }
    for number, (line, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{number}.jsonl"
        path.write_text(json.dumps(good) + "\n" + line + "\n")
        with pytest.raises(ScratchLMError, match=message) as error:
            read_preferences(path)
        assert f"bad{number}.jsonl:2" in str(error.value) and "\n" not in str(error.value)
    array = tmp_path / "bad.json"
    array.write_text(json.dumps([good, {"prompt": "p", "chosen": "a"}]))
    with pytest.raises(ScratchLMError, match=r"bad\.json record 2"):
        read_preferences(array)
    capsys.readouterr()
    code = main(
        [
            "dpo",
            "-m",
            str(base),
            "--data",
            str(tmp_path / "bad0.jsonl"),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    printed = capsys.readouterr().err.strip()
    assert code == 2 and "bad0.jsonl:2" in printed and "\n" not in printed
    with pytest.raises(ScratchLMError, match="--loss"):
        DPOSettings(loss="kto")


# --- the reference cache ----------------------------------------------------------------------------


def test_cached_reference_equals_recomputed_and_a_naive_loop(
    tmp_path: Path, base: Path, preferences: Path, bpe_tokenizer: Tokenizer
) -> None:
    trainer = DPOTrainer(config(tmp_path / "run", preferences, max_steps=1), base=str(base))
    cached = load_file(str(tmp_path / "run" / REFERENCE_FILE))
    assert cached["train"].shape == (len(trainer.train_pairs), 2)
    assert cached["val"].shape == (len(trainer.val_pairs), 2)
    model = load_checkpoint(base).model.eval()
    # batched again, with another batch size (other padding)
    again = reference_logprobs(
        model,
        trainer.train_pairs,
        batch_size=5,
        pad_id=bpe_tokenizer.pad_id,
        device=torch.device("cpu"),
        autocast=torch.autocast("cpu", enabled=False),
    )
    assert torch.allclose(cached["train"], again, atol=1e-4)
    # a naive loop: one sequence at a time, log_softmax at the targets over the masked positions
    assert model.config.padded_vocab_size > model.config.vocab_size  # padding columns exist
    with torch.no_grad():
        for split in ("train", "val"):
            pairs = trainer.train_pairs if split == "train" else trainer.val_pairs
            for index, pair in enumerate(pairs[:12]):
                for column, side in enumerate((pair.chosen, pair.rejected)):
                    logits = model(torch.tensor([side.ids[:-1]]))[0]
                    # over the real vocabulary: the padding columns are never a reply token
                    logp = torch.log_softmax(logits[:, : model.config.vocab_size].float(), dim=-1)
                    total = sum(
                        logp[position, side.ids[position + 1]].item()
                        for position in range(len(side.ids) - 1)
                        if side.mask[position + 1]
                    )
                    assert cached[split][index, column].item() == pytest.approx(total, abs=1e-4)
    # the training batches carry the cached values of their own pairs
    batch = trainer.loader.next_batch()
    count = len(batch.index)
    assert torch.equal(batch.reference[:count], cached["train"][batch.index, 0])
    assert torch.equal(batch.reference[count:], cached["train"][batch.index, 1])


# --- training ---------------------------------------------------------------------------------------


def test_a_short_run_learns_the_preference(tmp_path: Path, base: Path, preferences: Path) -> None:
    result = preference.dpo(
        config(tmp_path / "run", preferences, lr=2e-3, max_steps=30, eval_every=30),
        base=str(base),
        settings=DPOSettings(beta=0.5),
    )
    # the seeded base model prefers the refusal: the preference is learned, not found
    assert result.before["val_preference_accuracy"] < 0.5, result.before
    assert result.before["val_reward_accuracy"] == 0.0  # rewards tie at the start
    assert result.after["val_preference_accuracy"] >= 0.9, result.after
    assert result.after["val_reward_accuracy"] >= 0.9, result.after
    assert result.after["val_reward_margin"] > 0
    assert result.after["val_loss"] < result.before["val_loss"]
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert records[0]["kind"] == "preference_before"
    assert records[0]["val_preference_accuracy"] == result.before["val_preference_accuracy"]
    train = [record for record in records if record["kind"] == "train"]
    assert {"reward_accuracy", "reward_margin", "logp_chosen", "logp_rejected"} <= set(train[-1])
    evals = [record for record in records if record["kind"] == "eval"]
    assert evals[-1]["val_preference_accuracy"] == result.after["val_preference_accuracy"]
    # an ordinary fine-tuning checkpoint, with the DPO settings recorded
    metadata = json.loads((result.checkpoint / "config.json").read_text())
    assert metadata["dpo"] == {"loss": "sigmoid", "beta": 0.5}
    assert load_checkpoint(tmp_path / "run").config == load_checkpoint(base).config


def test_eval_tokens_caps_the_held_out_pairs(
    tmp_path: Path, base: Path, preferences: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--eval-tokens bounds every evaluation: the first held-out pairs that fit, the same ones
    before and after training, and the log says how many of how many."""
    full = preference.dpo(
        config(tmp_path / "full", preferences, max_steps=2, eval_every=2, quiet=False),
        base=str(base),
    )
    assert "held-out pairs (--eval-tokens" not in capsys.readouterr().out
    capped = preference.dpo(
        config(
            tmp_path / "capped", preferences, max_steps=2, eval_every=2, eval_tokens=60, quiet=False
        ),
        base=str(base),
    )
    trainer_log = capsys.readouterr().out
    cached = load_file(str(tmp_path / "capped" / REFERENCE_FILE))["val"]
    total = len(load_file(str(tmp_path / "full" / REFERENCE_FILE))["val"])
    assert 1 <= len(cached) < total
    assert f"evaluating the first {len(cached)} of {total} held-out pairs" in trainer_log
    # the same first pairs: their reference log-probs agree with the full run's
    full_cached = load_file(str(tmp_path / "full" / REFERENCE_FILE))["val"]
    torch.testing.assert_close(cached, full_cached[: len(cached)])
    assert capped.before.keys() == full.before.keys()


@pytest.mark.parametrize("kind", ["ipo", "simpo"])
def test_ipo_and_simpo_train(tmp_path: Path, base: Path, preferences: Path, kind: str) -> None:
    result = preference.dpo(
        config(tmp_path / kind, preferences, lr=2e-3, max_steps=12, eval_every=12),
        base=str(base),
        settings=DPOSettings(loss=kind),
    )
    assert result.after["val_loss"] < result.before["val_loss"], (result.before, result.after)
    cached = load_file(str(tmp_path / kind / REFERENCE_FILE))
    assert ("train" in cached) == (kind == "ipo")  # SimPO needs no training reference


def test_resume_is_bit_identical_and_keeps_its_settings(
    tmp_path: Path, base: Path, preferences: Path
) -> None:
    # 2 micro-batches per step (gradient accumulation): 2 x 8 pairs x 64 tokens
    common = {"max_steps": 8, "eval_every": 3, "tokens_per_step": 2 * 8 * 64}
    preference.dpo(config(tmp_path / "straight", preferences, **common), base=str(base))
    preference.dpo(
        config(tmp_path / "paused", preferences, stop_after_steps=4, **common), base=str(base)
    )
    cache = tmp_path / "paused" / REFERENCE_FILE
    written = cache.stat().st_mtime_ns
    with pytest.raises(ScratchLMError, match="different DPO settings") as error:
        DPOTrainer(
            config(tmp_path / "paused", preferences, resume=True, **common),
            base=str(base),
            settings=DPOSettings(beta=0.2),
        )
    assert "\n" not in str(error.value)
    result = preference.dpo(
        config(tmp_path / "paused", preferences, resume=True, **common), base=str(base)
    )
    assert cache.stat().st_mtime_ns == written  # reused, not recomputed
    assert result.steps == 8
    first = load_file(
        str(tmp_path / "straight" / "checkpoints" / "step_000008" / "model.safetensors")
    )
    second = load_file(
        str(tmp_path / "paused" / "checkpoints" / "step_000008" / "model.safetensors")
    )
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    # other data with the same number of pairs: the cached reference does not fit, refused
    changed = tmp_path / "changed.jsonl"
    changed.write_text(preferences.read_text().replace("I will not say.", "Never."))
    with pytest.raises(ScratchLMError, match="reference log-probs of other data"):
        DPOTrainer(config(tmp_path / "paused", changed, resume=True, max_steps=10), base=str(base))


def test_cli_lora_run_and_print_config(
    tmp_path: Path, base: Path, preferences: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    arguments = ["dpo", "-m", str(base), "--data", str(preferences), "--out", str(out)]
    arguments += ["--max-steps", "3", "--eval-every", "3", "--batch-size", "4", "--quiet"]
    arguments += ["--lora-rank", "2", "--loss", "ipo", "--beta", "0.3"]
    assert main([*arguments, "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "loss: ipo" in printed and "beta: 0.3" in printed and "lora_rank: 2" in printed
    assert main(arguments) == 0
    output = capsys.readouterr().out
    assert "held-out preference accuracy" in output and "next: scratchlm chat" in output
    step = out / (out / "latest").read_text().strip()
    assert (step / "adapter.safetensors").is_file()
    metadata = json.loads((step / "config.json").read_text())
    assert metadata["dpo"] == {"loss": "ipo", "beta": 0.3}
    assert metadata["finetune"]["lora"]["rank"] == 2
    # no --lr: DPO's LoRA rate
    resolved = json.loads((out / "run_config.json").read_text())["resolved"]
    assert resolved["learning_rate"] == DPO_LORA_LR


def test_api_and_config_file(tmp_path: Path, base: Path, preferences: Path) -> None:
    import scratchlm.api

    settings = tmp_path / "dpo.yaml"
    settings.write_text("loss: simpo\nsimpo-gamma: 0.25\nbatch_size: 4\n")
    run = scratchlm.api.dpo(
        base,
        data=preferences,
        out=tmp_path / "run",
        config=str(settings),
        max_steps=2,
        eval_every=2,
        quiet=True,
    )
    metadata = json.loads((run / "best" / "config.json").read_text())
    assert metadata["dpo"] == {"loss": "simpo", "beta": 2.0, "simpo_gamma": 0.25}
    with pytest.raises(ScratchLMError, match="unknown setting 'betta'"):
        scratchlm.api.dpo(base, data=preferences, betta=0.1)
    with pytest.raises(ScratchLMError, match="needs data="):
        scratchlm.api.dpo(base)
