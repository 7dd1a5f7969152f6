"""`scratchlm rl`: advantages, pass@k, the loss against naive references, rollouts' log-probs,
no update without signal, a reward that rises, exact resume, and the CLI's one-line errors."""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scratchlm.chat_template import end_of_turn_id, render
from scratchlm.checkpoint import save_checkpoint
from scratchlm.cli import main
from scratchlm.errors import ScratchLMError
from scratchlm.finetune.lora import LoRASettings
from scratchlm.finetune.rl import (
    RLSettings,
    build_rollout,
    group_advantages,
    pass_at_k,
    policy_loss,
    rl,
    sample_replies,
    target_logprobs,
)
from scratchlm.finetune.tasks import Problem, Task
from scratchlm.inference.settings import SamplingSettings
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from scratchlm.training.run_config import TrainConfig
from tests.conftest import seeded, tiny_config

VOWELS = "aeiou"


def say_a_letter(split: str, count: int, seed: int) -> list[Problem]:
    """A one-token task: the reply's first letter is all that counts."""
    words = ["cat", "dog", "ball", "sun", "tree", "red", "big", "day"]
    offset = 0 if split == "train" else 4
    return [
        Problem(f"Say a letter {words[(offset + i) % len(words)]}.", "a")
        for i in range(min(count, 16))
    ]


LETTER_TASK = Task("letter", "say a letter", "exact", say_a_letter)


def starts_with_vowel(reply: str, problem: Problem) -> float:
    return 1.0 if reply[:1] in VOWELS else 0.0


def constant_reward(reply: str, problem: Problem) -> float:
    return 0.5


@pytest.fixture
def base(tmp_path: Path, char_tokenizer: Tokenizer) -> Path:
    torch.manual_seed(0)
    model = build_model(
        tiny_config("tiny", vocab_size=char_tokenizer.vocab_size, context_length=64)
    )
    return save_checkpoint(tmp_path / "base", model, char_tokenizer)


def run_config(out: Path, **extra: object) -> TrainConfig:
    values: dict[str, object] = {
        "out": str(out),
        "batch_size": 16,
        "max_steps": 6,
        "eval_every": 100,
        "save_every": 100,
        "warmup_steps": 0,
        "weight_decay": 0.1,  # a skipped step must not decay the weights either
        "spike_factor": 0.0,
        "log_every": 1,
        "quiet": True,
        "lr": 1e-2,
        "seed": 3,
    }
    values.update(extra)
    return TrainConfig(**values)  # type: ignore[arg-type]


def letter_settings(**extra: object) -> RLSettings:
    values: dict[str, object] = {
        "task": "letter",
        "prompts_per_step": 4,
        "group_size": 8,
        "max_new_tokens": 1,
        "train_problems": 16,
        "eval_problems": 4,
        "pass_k": 2,
        "eval_samples": 4,
    }
    values.update(extra)
    return RLSettings(**values)  # type: ignore[arg-type]


def records(run: Path, kind: str) -> list[dict[str, object]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


# --- pure parts ------------------------------------------------------------------------------------


def test_group_advantages_sum_to_zero_and_equal_groups_give_zero() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.3, 0.3, 0.3, 0.3], [2.0, -1.0, 0.5, 0.1]])
    for normalize_std in (True, False):
        advantages = group_advantages(rewards, normalize_std=normalize_std)
        assert torch.allclose(advantages.sum(dim=1), torch.zeros(3), atol=1e-6)
        assert torch.equal(advantages[1], torch.zeros(4))  # all equal: exactly no signal
        for row in (0, 2):
            values = rewards[row].tolist()
            mean = statistics.fmean(values)
            scale = statistics.stdev(values) + 1e-4 if normalize_std else 1.0
            expected = torch.tensor([(value - mean) / scale for value in values])
            assert torch.allclose(advantages[row], expected, atol=1e-6)


def test_pass_at_k_equals_counting_subsets() -> None:
    for n, k in ((5, 1), (5, 2), (6, 3), (4, 4)):
        for correct in range(n + 1):
            outcomes = [True] * correct + [False] * (n - correct)
            subsets = list(itertools.combinations(outcomes, k))
            expected = sum(any(subset) for subset in subsets) / len(subsets)
            assert pass_at_k(n, correct, k) == pytest.approx(expected)


def naive_token_terms(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    old: torch.Tensor | None,
    clip: float,
) -> torch.Tensor:
    """The per-token objective written out one token at a time (REINFORCE, or PPO's formula)."""
    total = torch.zeros(())
    for row in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            if not mask[row, t]:
                continue
            logp = torch.log_softmax(logits[row, t], dim=-1)[targets[row, t]]
            advantage = float(advantages[row])
            if old is None:
                total = total - advantage * logp
            else:
                ratio = torch.exp(logp - old[row, t])
                clipped = torch.clamp(ratio, 1 - clip, 1 + clip)
                total = total - torch.min(ratio * advantage, clipped * advantage)
    return total / mask.sum()


def test_policy_loss_gradient_equals_naive_reference() -> None:
    generator = seeded(1)
    logits = torch.randn(3, 5, 7, generator=generator)
    targets = torch.randint(0, 7, (3, 5), generator=generator)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.float)
    advantages = torch.tensor([1.5, -0.7, 0.4])
    # old log-probs near the current ones, some far enough that the ratio is clipped
    with torch.no_grad():
        current = target_logprobs(logits, targets, 7)
    old = current + torch.randn(3, 5, generator=generator) * 0.4
    for previous in (None, old):
        ours = logits.clone().requires_grad_(True)
        loss, stats = policy_loss(
            target_logprobs(ours, targets, 7),
            mask,
            advantages,
            normalizer=float(mask.sum()),
            old_logprobs=previous,
            clip=0.2,
        )
        loss.backward()
        reference = logits.clone().requires_grad_(True)
        expected = naive_token_terms(reference, targets, mask, advantages, previous, 0.2)
        expected.backward()
        assert ours.grad is not None and reference.grad is not None
        assert torch.allclose(ours.grad, reference.grad, atol=1e-6)
        if previous is not None:  # on policy the value is -mean(A) (ratio 1), not REINFORCE's
            assert torch.allclose(loss, expected, atol=1e-6)
            ratio = torch.exp(current - old)
            outside = ((ratio - 1).abs() > 0.2) & (mask > 0)
            assert stats.clipped == float(outside.sum()) and stats.clipped > 0
    # the KL term: k3 per reply token, its gradient through log p
    ref = current - 0.3
    ours = logits.clone().requires_grad_(True)
    zero = torch.zeros(3)
    loss, stats = policy_loss(
        target_logprobs(ours, targets, 7), mask, zero, normalizer=4.0, ref_logprobs=ref, kl=0.5
    )
    reference = logits.clone().requires_grad_(True)
    logp = target_logprobs(reference, targets, 7)
    k3 = torch.exp(ref - logp) - (ref - logp) - 1
    expected = 0.5 * (k3 * mask).sum() / 4.0
    assert torch.allclose(loss, expected, atol=1e-6)
    assert stats.kl == pytest.approx(float((k3 * mask).sum().detach()), rel=1e-5)


def test_sampled_logprobs_equal_a_fresh_forward(char_tokenizer: Tokenizer) -> None:
    torch.manual_seed(0)
    model = build_model(
        tiny_config("tiny", vocab_size=char_tokenizer.vocab_size, context_length=64)
    ).eval()
    end = end_of_turn_id(char_tokenizer)
    prompts = [
        render([{"role": "user", "content": text}], char_tokenizer, add_generation_prompt=True)[0]
        for text in ("Tom", "the red ball", "Lily was happy")
    ]
    rows = [prompts[i % 3] for i in range(6)]
    replies = sample_replies(
        model,
        rows,
        sampling=SamplingSettings(temperature=1.0, top_k=None),
        max_new_tokens=12,
        seeds=list(range(6)),
        end_id=end,
        max_rows=4,  # fewer rows than requests: rows join as others finish
    )
    rollout = build_rollout(rows, replies, torch.zeros(6), torch.zeros(6), char_tokenizer.pad_id)
    with torch.no_grad():
        fresh = target_logprobs(
            model(rollout.ids[:, :-1]), rollout.ids[:, 1:], model.config.vocab_size
        )
    for row, (prompt, reply) in enumerate(zip(rows, replies, strict=True)):
        assert reply.token_ids and (reply.token_ids[-1] == end or len(reply.token_ids) == 12)
        where = rollout.mask[row].nonzero().view(-1)
        # the mask covers exactly the reply's tokens: the targets at its positions are the reply
        assert rollout.ids[row, where + 1].tolist() == reply.token_ids
        assert where[0] == len(prompt) - 1
        assert torch.allclose(rollout.old_logprobs[row, where], fresh[row, where], atol=1e-4)
    assert rollout.reply_tokens == sum(len(reply.token_ids) for reply in replies)


# --- training --------------------------------------------------------------------------------------


def test_a_constant_reward_changes_no_weight(tmp_path: Path, base: Path) -> None:
    result = rl(
        run_config(tmp_path / "run", max_steps=3),
        base=str(base),
        settings=letter_settings(),
        task=LETTER_TASK,
        reward=constant_reward,
    )
    after = load_file(str(result.checkpoint / "model.safetensors"))
    before = load_file(str(base / "model.safetensors"))
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert [record["skipped_steps"] for record in records(tmp_path / "run", "train")] == [1, 1, 1]
    assert all(record["signal_fraction"] == 0.0 for record in records(tmp_path / "run", "train"))


def test_a_non_finite_reward_is_a_one_line_error(tmp_path: Path, base: Path) -> None:
    def nan_reward(reply: str, problem: Problem) -> float:
        return float("nan")

    with pytest.raises(ScratchLMError, match=r"reward function .*nan_reward returned nan") as error:
        rl(
            run_config(tmp_path / "run", max_steps=1),
            base=str(base),
            settings=letter_settings(),
            task=LETTER_TASK,
            reward=nan_reward,
        )
    assert "\n" not in str(error.value)


def test_rl_raises_the_reward_on_a_tiny_task(tmp_path: Path, base: Path) -> None:
    result = rl(
        run_config(tmp_path / "run", max_steps=20, eval_every=20),
        base=str(base),
        settings=letter_settings(),
        task=LETTER_TASK,
        reward=starts_with_vowel,
    )
    train = records(tmp_path / "run", "train")
    early = statistics.fmean(float(record["reward_mean"]) for record in train[:3])  # type: ignore[arg-type]
    late = statistics.fmean(float(record["reward_mean"]) for record in train[-3:])  # type: ignore[arg-type]
    assert result.before is not None and result.after is not None
    assert late > early + 0.4, (early, late)
    assert result.after["reward_mean"] > result.before["reward_mean"] + 0.4
    assert result.after["pass@1"] == 1.0 and result.after["val_loss"] == 0.0
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


def test_resume_after_a_stop_is_exact(tmp_path: Path, base: Path) -> None:
    # K = 2 with a pause after step 3: the stop falls while a rollout batch is being reused
    def run(config: TrainConfig, settings: RLSettings) -> None:
        rl(
            config,
            base=str(base),
            settings=settings,
            lora=LoRASettings(rank=4, alpha=8),
            task=LETTER_TASK,
            reward=starts_with_vowel,
        )

    settings = letter_settings(updates_per_batch=2, kl=0.1)
    run(run_config(tmp_path / "straight"), settings)
    run(run_config(tmp_path / "paused", stop_after_steps=3), settings)
    run(run_config(tmp_path / "paused", resume=True), settings)
    straight = load_file(str(tmp_path / "straight/checkpoints/step_000006/adapter.safetensors"))
    resumed = load_file(str(tmp_path / "paused/checkpoints/step_000006/adapter.safetensors"))
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    assert any(not torch.equal(tensor, torch.zeros_like(tensor)) for tensor in straight.values())
    train = records(tmp_path / "straight", "train")
    assert train[0]["kl"] == 0.0 and "clip_fraction" in train[0]  # the adapters start at zero
    # only one rl_before: the resumed run measured nothing again
    assert len(records(tmp_path / "paused", "rl_before")) == 1
    with pytest.raises(ScratchLMError, match=r"different RL settings.*--group-size 4"):
        run(
            run_config(tmp_path / "paused", resume=True, max_steps=8),
            letter_settings(updates_per_batch=2, kl=0.1, group_size=4),
        )


def test_kl_to_a_frozen_copy_when_all_weights_train(tmp_path: Path, base: Path) -> None:
    rl(
        run_config(tmp_path / "run", max_steps=3),
        base=str(base),
        settings=letter_settings(kl=0.5),
        task=LETTER_TASK,
        reward=starts_with_vowel,
    )
    kl = [float(record["kl"]) for record in records(tmp_path / "run", "train")]  # type: ignore[arg-type]
    # the first step's policy is the reference (up to float rounding); then they part
    assert kl[0] < 1e-6 and kl[-1] > 1e-4, kl


# --- the command -----------------------------------------------------------------------------------


def test_cli_refuses_bad_tasks_rewards_and_flags(
    tmp_path: Path, base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "run")
    for extra, message in (
        (["--task", "chess"], "unknown --task 'chess'"),
        (["--task", "arithmetic", "--reward", "nonsense"], "unknown reward 'nonsense'"),
        (["--task", "arithmetic", "--val-data", "x.jsonl"], "--val-data does not apply to rl"),
        ([], "rl needs --task"),
    ):
        assert main(["rl", "--checkpoint", str(base), "--out", out, *extra]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and "\n" not in error, error
    assert not Path(out).exists()


def test_python_api_runs_a_file_task(tmp_path: Path, base: Path) -> None:
    from scratchlm import api

    problems = tmp_path / "problems.jsonl"
    lines = [json.dumps({"prompt": f"Say {word}.", "answer": word}) for word in VOWELS * 4]
    problems.write_text("\n".join(lines) + "\n")
    run = api.rl(
        base,
        task="file",
        task_data=problems,
        reward="regex:^[aeiou]",
        prompts_per_step=2,
        group_size=4,
        max_new_tokens=2,
        eval_problems=2,
        max_steps=2,
        out=tmp_path / "run",
        quiet=True,
        seed=1,
    )
    saved = json.loads((run / "checkpoints" / "step_000002" / "config.json").read_text())
    assert saved["rl"]["task"] == "file" and saved["rl"]["reward"] == "regex:^[aeiou]"
    assert saved["finetune"]["data"] == "task:file"
    assert len(records(run, "rl_before")) == 1 and len(records(run, "eval")) == 1
    with pytest.raises(ScratchLMError, match="unknown setting 'val_data'"):
        api.rl(base, task="arithmetic", val_data="x.jsonl", out=tmp_path / "other")
