"""Reinforcement learning from verifiable rewards, GRPO-style: `scratchlm rl`.

Each optimizer step (nanochat's scripts/chat_rl.py is the recipe; DeepSeekMath's GRPO and PPO add
the optional parts):
1. take the next `--prompts-per-step` P training problems of the task (a seeded cursor that
   resumes) and sample `--group-size` G replies to each with the batched decoder on the current
   model (eval mode, no gradient, `--temperature`); each row's generator is seeded from (run seed,
   rollout number, row), so a resumed run samples what an uninterrupted one would;
2. score each reply with the reward function (a plain Python function of the reply text and the
   problem); advantages are (r - group mean) / (group std + 1e-4) within each group of G (only
   r - mean with `--no-std`, as nanochat), so they sum to zero per group and a group whose rewards
   are all equal teaches nothing;
3. the loss is a token-level policy gradient over the sampled reply tokens only (prompt and
   padding masked), summed and divided by the number of reply tokens in the whole batch (DAPO's
   token-level normalisation: long replies are not down-weighted per token). With
   `--updates-per-batch` K > 1 the same rollouts serve K optimizer steps and PPO's clipped ratio
   against the log-probabilities recorded at sampling time keeps the later steps near the policy
   that sampled them; K = 1 is plain on-policy REINFORCE (ratio 1, gradient A * grad log p).
   `--kl` adds beta * k3(KL to the starting model) per reply token (k3 = exp(ref - logp) -
   (ref - logp) - 1, Schulman's low-variance estimator); the reference is the model with its LoRA
   adapters switched off, or a frozen copy of the base weights when all weights train (built only
   when --kl > 0);
4. when no row of the batch has a non-zero advantage the optimizer step is skipped (no weight
   decay or momentum drift): a constant reward leaves the weights bit-identical.

Everything else is the trainer's (budgets, checkpoints, best/, metrics.jsonl, TensorBoard, exact
resume). The batches reach the trainer's loop through `RolloutLoader` (next_batch, state_dict,
load_state_dict) and `RLTrainer.batch_loss`; a rollout batch being reused when a checkpoint is
written is saved with it, so kill + --resume ends bit-identical to an uninterrupted run.

Evaluation (`RLTrainer.evaluate`) on held-out problems: pass@1 (greedy), pass@k (k samples or
more at the training temperature, Chen et al. 2021's unbiased estimator), the sampled replies'
pass@1 and mean reward.
The trainer keeps best/ by the lowest `val_loss`, reported here as 1 - pass@1. The starting
model's numbers are logged once as a `rl_before` record of metrics.jsonl before training starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scratchlm.chat_template import end_of_turn_id, render
from scratchlm.errors import ScratchLMError
from scratchlm.finetune.lora import LoRALinear, LoRASettings
from scratchlm.finetune.rewards import RewardFunction, resolve_reward
from scratchlm.finetune.settings import RL_DEFAULTS
from scratchlm.finetune.tasks import Problem, Task, load_task
from scratchlm.finetune.trainer import FinetuneTrainer
from scratchlm.inference.batch import BatchDecoder, GenerationRequest
from scratchlm.inference.settings import SamplingSettings
from scratchlm.io_utils import read_jsonl
from scratchlm.model import GPT
from scratchlm.training.metrics import MetricsLogger
from scratchlm.training.run_config import TrainConfig
from scratchlm.training.trainer import TrainingResult

RL_FULL_LR = 1e-4  # --lr when not given: all weights train
RL_LORA_LR = 5e-4  # --lr when not given: LoRA adapters
STD_EPSILON = 1e-4  # advantages = (r - mean) / (std + this)
HELDOUT_SEED = 0  # the held-out problems are the same whatever --seed, so runs compare
DECODE_ROWS = 64  # sequences decoded together (the KV cache holds this many rows)
PASS_REWARD = 1.0  # a reply "passes" (pass@k) when its reward reaches this
SAMPLE_PROMPT_CHARS = 200  # of the problem shown in the eval record's sample


# --- settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RLSettings:
    """rl's own settings (besides TrainConfig's); the defaults are settings.RL_DEFAULTS."""

    task: str
    task_data: str | None = RL_DEFAULTS["task_data"]
    reward: str | None = RL_DEFAULTS["reward"]
    prompts_per_step: int = RL_DEFAULTS["prompts_per_step"]
    group_size: int = RL_DEFAULTS["group_size"]
    temperature: float = RL_DEFAULTS["temperature"]
    max_new_tokens: int = RL_DEFAULTS["max_new_tokens"]
    updates_per_batch: int = RL_DEFAULTS["updates_per_batch"]
    clip: float = RL_DEFAULTS["clip"]
    kl: float = RL_DEFAULTS["kl"]
    no_std: bool = RL_DEFAULTS["no_std"]
    train_problems: int = RL_DEFAULTS["train_problems"]
    eval_problems: int = RL_DEFAULTS["eval_problems"]
    pass_k: int | None = RL_DEFAULTS["pass_k"]
    eval_samples: int | None = RL_DEFAULTS["eval_samples"]

    # What decides the training (a resumed run must keep them); the rest only decide evaluation.
    TRAINING = (
        "task",
        "task_data",
        "reward",
        "prompts_per_step",
        "group_size",
        "temperature",
        "max_new_tokens",
        "updates_per_batch",
        "clip",
        "kl",
        "no_std",
        "train_problems",
    )

    def __post_init__(self) -> None:
        problems = []
        for name in ("prompts_per_step", "max_new_tokens", "updates_per_batch"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1")
        if self.group_size < 2:
            problems.append("--group-size must be >= 2 (the group's mean reward is the baseline)")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            problems.append(
                "--temperature must be > 0 (greedy replies are all alike: no group signal)"
            )
        if not (math.isfinite(self.clip) and self.clip > 0):
            problems.append("--clip must be > 0")
        if not (math.isfinite(self.kl) and self.kl >= 0):
            problems.append("--kl must be >= 0 (0 = no KL penalty)")
        if self.train_problems < self.prompts_per_step:
            problems.append("--train-problems must be >= --prompts-per-step")
        if self.eval_problems < 1:
            problems.append("--eval-problems must be >= 1")
        if self.pass_k is not None and self.pass_k < 1:
            problems.append("--pass-k must be >= 1")
        if self.eval_samples is not None and self.eval_samples < self.k:
            problems.append(f"--eval-samples must be >= --pass-k ({self.k})")
        if problems:
            raise ScratchLMError("; ".join(problems))

    @property
    def k(self) -> int:
        """pass@k's k: --pass-k, else the group size."""
        return self.pass_k if self.pass_k is not None else self.group_size

    @property
    def samples_per_eval_problem(self) -> int:
        """n of pass@k's estimator: --eval-samples, else k."""
        return self.eval_samples if self.eval_samples is not None else self.k

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- pure parts: seeds, advantages, pass@k, the loss -----------------------------------------------


def row_seed(*parts: object) -> int:
    """A 63-bit generator seed from its parts (e.g. run seed, rollout number, row): stable across
    processes (unlike hash()), so a resumed run draws the same samples."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def group_advantages(rewards: torch.Tensor, *, normalize_std: bool = True) -> torch.Tensor:
    """rewards (P, G), one row per prompt's group -> advantages (P, G): r - the group's mean,
    divided by the group's standard deviation + 1e-4 unless not `normalize_std`. A group whose
    rewards are all equal gets exactly 0 (not the rounding error of r - mean)."""
    rewards = rewards.double()  # the mean and std in float64: the sums come out closer to zero
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if normalize_std:
        centered = centered / (rewards.std(dim=1, keepdim=True) + STD_EPSILON)
    flat = rewards.amax(dim=1, keepdim=True) == rewards.amin(dim=1, keepdim=True)
    return torch.where(flat, torch.zeros_like(centered), centered).float()


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The chance that at least one of k replies drawn from n (of which `correct` pass) passes:
    1 - C(n - c, k) / C(n, k), the unbiased estimator of Chen et al. 2021 (n >= k)."""
    assert 0 <= correct <= n and 1 <= k <= n
    if n - correct < k:
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """logits (B, T, padded_vocab), targets (B, T) -> log p(target) (B, T) in float32, over the
    real vocabulary (padding columns are never sampled, so they are no part of the policy)."""
    logprobs = torch.log_softmax(logits[..., :vocab_size].float(), dim=-1)
    return logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@dataclass
class LossStats:
    """Sums over one micro-batch's reply tokens, for the train records."""

    tokens: float
    clipped: float  # tokens whose ratio left [1 - clip, 1 + clip]
    kl: float  # the k3 estimate, summed


def policy_loss(
    logprobs: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    *,
    normalizer: float,
    old_logprobs: torch.Tensor | None = None,
    clip: float = 0.2,
    ref_logprobs: torch.Tensor | None = None,
    kl: float = 0.0,
) -> tuple[torch.Tensor, LossStats]:
    """The policy-gradient loss of a micro-batch, summed over its reply tokens and divided by
    `normalizer` (the reply tokens of the whole batch: token-level normalisation).

    logprobs (B, T): log p of each target under the model being trained (with gradient);
    mask (B, T): 1 where the target is a reply token; advantages (B,), one per row.
    old_logprobs (B, T): when given (a batch reused for several updates), PPO's clipped
    objective min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A) with ratio = p / p_old;
    without, the on-policy gradient A * grad log p (the ratio p / p.detach() is 1).
    ref_logprobs (B, T) with kl > 0: + kl * k3, k3 = exp(ref - logp) - (ref - logp) - 1."""
    selected = mask > 0
    advantage = advantages.view(-1, 1).to(logprobs.dtype)  # (B, 1): the row's, on every token
    if old_logprobs is None:
        ratio = torch.exp(logprobs - logprobs.detach())
        per_token = -advantage * ratio
        clipped = torch.zeros((), device=logprobs.device)
    else:
        ratio = torch.exp(logprobs - old_logprobs)
        bounded = ratio.clamp(1.0 - clip, 1.0 + clip)
        per_token = -torch.minimum(ratio * advantage, bounded * advantage)
        outside = (ratio < 1.0 - clip) | (ratio > 1.0 + clip)
        clipped = (outside & selected).sum()
    divergence = torch.zeros((), device=logprobs.device)
    if ref_logprobs is not None and kl > 0:
        delta = ref_logprobs - logprobs
        k3 = torch.exp(delta) - delta - 1.0  # (B, T), >= 0
        per_token = per_token + kl * k3
        divergence = torch.where(selected, k3.detach(), 0.0).sum()
    # where(), not a product: a masked position's value (never trained) cannot leak a NaN
    loss = torch.where(selected, per_token, 0.0).sum() / normalizer
    stats = LossStats(float(selected.sum()), float(clipped), float(divergence))
    return loss, stats


# --- rollouts --------------------------------------------------------------------------------------


@dataclass
class Reply:
    token_ids: list[int]  # the sampled tokens, the closing <|end|> included when the turn ended
    logprobs: list[float]  # log p of each under the sampling model's raw logits (float32)


def sample_replies(
    model: GPT,
    prompts: Sequence[list[int]],
    *,
    sampling: SamplingSettings,
    max_new_tokens: int,
    seeds: Sequence[int],
    end_id: int,
    max_rows: int = DECODE_ROWS,
) -> list[Reply]:
    """One reply per prompt, decoded together by the batch decoder (continuous batching, KV
    cache), each row with its own seed. A reply ends at `end_id` (kept: the policy learns when to
    stop) or after `max_new_tokens` / at the context's end. The decoder's own stop_ids would drop
    the closing token and its log-probability, so rows that close their turn are taken out here.
    The caller picks the model's mode (eval) and autocast."""
    decoder = BatchDecoder(model, max_batch=max(1, min(len(prompts), max_rows)))
    replies: list[Reply | None] = [None] * len(prompts)
    owner: dict[int, int] = {}  # decoder handle -> prompt index
    waiting = deque(enumerate(prompts))

    def finish(row: Any) -> None:
        if row.finish_reason == "error":
            raise ScratchLMError(f"sampling a reply failed: {row.error}")
        logprobs = [entry.logprob for entry in row.logprobs]
        assert len(logprobs) == len(row.generated)
        replies[owner[row.handle]] = Reply(list(row.generated), logprobs)

    while waiting or decoder.active:
        while waiting and decoder.has_room:
            index, prompt = waiting.popleft()
            request = GenerationRequest(
                list(prompt),
                max_new_tokens=max_new_tokens,
                sampling=sampling,
                seed=seeds[index],
                logprobs=0,
            )
            owner[decoder.add(request)] = index
        closed = [
            row
            for row in decoder.rows
            if row.finish_reason is None and row.generated and row.generated[-1] == end_id
        ]
        for row in closed:
            decoder.remove(row.handle)
            finish(row)
        for row in decoder.step():
            finish(row)
    assert all(reply is not None for reply in replies)
    return [reply for reply in replies if reply is not None]


@dataclass
class Rollout:
    """The sampled rows of one step (N = P * G, problem-major): what the loss trains on."""

    ids: torch.Tensor  # (N, T) long: prompt + reply, right-padded with the pad id
    lengths: torch.Tensor  # (N,) long: prompt + reply tokens of each row
    mask: torch.Tensor  # (N, T - 1) float: 1 where the target ids[:, t + 1] is a reply token
    old_logprobs: torch.Tensor  # (N, T - 1) float32: log p of each reply target when sampled
    advantages: torch.Tensor  # (N,)
    rewards: torch.Tensor  # (N,)
    ref_logprobs: torch.Tensor | None = None  # (N, T - 1): the starting model's (with --kl)

    @property
    def reply_tokens(self) -> int:
        return int(self.mask.sum().item())

    @property
    def has_signal(self) -> bool:
        return bool(self.advantages.ne(0).any())

    def rows(self, start: int, end: int) -> Rollout:
        """Rows start..end-1, cut to their longest row (less padding to forward)."""
        width = int(self.lengths[start:end].max().item())
        ref = self.ref_logprobs
        return Rollout(
            ids=self.ids[start:end, :width],
            lengths=self.lengths[start:end],
            mask=self.mask[start:end, : width - 1],
            old_logprobs=self.old_logprobs[start:end, : width - 1],
            advantages=self.advantages[start:end],
            rewards=self.rewards[start:end],
            ref_logprobs=None if ref is None else ref[start:end, : width - 1],
        )

    def state_dict(self) -> dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Rollout:
        values: dict[str, Any] = {
            item.name: state.get(item.name) for item in dataclasses.fields(cls)
        }
        return cls(**values)


def build_rollout(
    prompts: Sequence[list[int]],
    replies: Sequence[Reply],
    rewards: torch.Tensor,
    advantages: torch.Tensor,
    pad_id: int,
) -> Rollout:
    """Rows of prompt + reply ids, right-padded, with the reply-target mask and the sampled
    log-probabilities placed at the positions that predict each reply token."""
    lengths = [
        len(prompt) + len(reply.token_ids) for prompt, reply in zip(prompts, replies, strict=True)
    ]
    width = max(lengths)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), width - 1)
    old = torch.zeros(len(prompts), width - 1)
    for row, (prompt, reply) in enumerate(zip(prompts, replies, strict=True)):
        ids[row, : lengths[row]] = torch.tensor(prompt + reply.token_ids, dtype=torch.long)
        # position t predicts token t + 1: the reply's tokens are predicted from len(prompt) - 1 on
        start, end = len(prompt) - 1, lengths[row] - 1
        mask[row, start:end] = 1.0
        old[row, start:end] = torch.tensor(reply.logprobs, dtype=torch.float32)
    return Rollout(
        ids=ids,
        lengths=torch.tensor(lengths, dtype=torch.long),
        mask=mask,
        old_logprobs=old,
        advantages=advantages.float(),
        rewards=rewards.float(),
    )


@dataclass
class RolloutBatch:
    """One micro-batch for `RLTrainer.batch_loss`."""

    rows: Rollout
    normalizer: float  # reply tokens of the whole rollout batch (token-level normalisation)
    on_policy: bool  # K = 1: no ratio to the sampling-time log-probabilities


class RolloutLoader:
    """The trainer's loader for rl: each optimizer step takes all micro-batches of one rollout
    batch; a batch is sampled (by `sample(problem indices, rollout number)`, the trainer's, which
    holds the model) when the previous one has served its `updates_per_batch` steps. Problems
    come from a cursor over the training pool, reshuffled (seeded) each epoch.

    state_dict holds the cursor, the counters and, while a batch has updates left, the batch
    itself (its samples came from weights that no longer exist)."""

    def __init__(
        self,
        pool_size: int,
        *,
        prompts_per_step: int,
        group_size: int,
        micro_batch: int,
        updates_per_batch: int,
        seed: int,
        sample: Callable[[list[int], int], Rollout],
    ) -> None:
        self.pool_size = pool_size
        self.prompts_per_step = prompts_per_step
        self.rows_per_batch = prompts_per_step * group_size
        self.micro_batch = micro_batch
        self.updates_per_batch = updates_per_batch
        self.seed = seed
        self.sample = sample
        self.epoch = 0
        self.position = 0  # next problem in this epoch's order
        self.sampled = 0  # rollout batches sampled so far
        self.updates = 0  # optimizer steps the current batch has served
        self.micro = 0  # next micro-batch of the current pass
        self.current: Rollout | None = None
        self._order: list[int] | None = None

    @property
    def micro_batches(self) -> int:
        """Micro-batches per optimizer step (the trainer's accumulation)."""
        return math.ceil(self.rows_per_batch / self.micro_batch)

    def order(self) -> list[int]:
        if self._order is None:
            generator = torch.Generator().manual_seed(row_seed("order", self.seed, self.epoch))
            self._order = torch.randperm(self.pool_size, generator=generator).tolist()
        return self._order

    def next_problems(self) -> list[int]:
        chosen: list[int] = []
        while len(chosen) < self.prompts_per_step:
            if self.position >= self.pool_size:
                self.epoch, self.position, self._order = self.epoch + 1, 0, None
            take = min(self.prompts_per_step - len(chosen), self.pool_size - self.position)
            chosen += self.order()[self.position : self.position + take]
            self.position += take
        return chosen

    def rollout(self) -> Rollout:
        """The rollout batch the next optimizer step trains on (sampled now if one is due)."""
        if self.current is None or self.updates >= self.updates_per_batch:
            cursor = (self.epoch, self.position, self._order)
            try:
                self.current = self.sample(self.next_problems(), self.sampled)
            except BaseException:  # Ctrl-C while sampling: the checkpoint saved next redoes it
                self.epoch, self.position, self._order = cursor
                raise
            self.sampled += 1
            self.updates, self.micro = 0, 0
        return self.current

    def next_batch(self) -> RolloutBatch:
        rollout = self.rollout()
        start = self.micro * self.micro_batch
        end = min(start + self.micro_batch, self.rows_per_batch)
        self.micro += 1
        if self.micro == self.micro_batches:
            self.micro, self.updates = 0, self.updates + 1
        return RolloutBatch(
            rollout.rows(start, end),
            normalizer=float(max(rollout.reply_tokens, 1)),
            on_policy=self.updates_per_batch == 1,
        )

    def skip_update(self) -> None:
        """Count one optimizer step of the current batch as served without training on it."""
        self.rollout()
        self.micro, self.updates = 0, self.updates + 1

    def state_dict(self) -> dict[str, Any]:
        # Saved between optimizer steps, or after Ctrl-C cut one short (micro > 0): that step
        # was not applied, so the resumed run redoes its whole pass (updates counts whole ones).
        reusing = self.current is not None and self.updates < self.updates_per_batch
        return {
            "epoch": self.epoch,
            "position": self.position,
            "sampled": self.sampled,
            "updates": self.updates,
            "rollout": self.current.state_dict() if reusing and self.current else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.sampled, self.updates = int(state["sampled"]), int(state["updates"])
        self.micro, self._order = 0, None
        saved = state.get("rollout")
        self.current = Rollout.from_state(saved) if saved is not None else None
        if self.current is None:
            self.updates = self.updates_per_batch  # the next step samples


# --- the trainer -----------------------------------------------------------------------------------


@contextmanager
def adapters_disabled(model: GPT) -> Iterator[None]:
    """The model without its LoRA adapters (the starting model) inside the block: each adapter's
    scale is 0, so a layer computes base(x) + 0 exactly."""
    layers = [module for module in model.modules() if isinstance(module, LoRALinear)]
    scales = [layer.scale for layer in layers]
    for layer in layers:
        layer.scale = 0.0
    try:
        yield
    finally:
        for layer, scale in zip(layers, scales, strict=True):
            layer.scale = scale


class _Totals:
    """What the train records average since the last one."""

    def __init__(self) -> None:
        self.rows = 0
        self.reward_sum = 0.0
        self.reward_squares = 0.0
        self.groups = 0
        self.groups_with_signal = 0
        self.reply_tokens = 0
        self.loss_tokens = 0.0
        self.clipped = 0.0
        self.kl = 0.0
        self.skipped = 0


class RLTrainer(FinetuneTrainer):
    """Fine-tuning's trainer (base checkpoint, LoRA, checkpoints) with rollouts as its data."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        base: str,
        settings: RLSettings,
        task: Task,
        reward: RewardFunction,
        lora: LoRASettings | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.task = task
        self.reward = reward
        self.totals = _Totals()
        self.last_sample = ""
        if config.lr is None:
            config = dataclasses.replace(config, lr=RL_LORA_LR if lora else RL_FULL_LR)
        # run_config.json says where the prompts came from (rl reads no --data)
        config = dataclasses.replace(config, data=f"task:{settings.task}")
        super().__init__(config, base=base, lora=lora, log=log)
        self.reference: GPT | None = None
        if settings.kl > 0 and lora is None:
            self.reference = self.frozen_base_model()

    # --- data: problems and rollouts ---------------------------------------------------------------
    def setup_data(self) -> None:
        if self.distributed.enabled:
            raise ScratchLMError(
                "rl runs in one process (its rollouts are sampled on one device); run it "
                "without torchrun"
            )
        settings, seed = self.settings, self.config.seed
        train = list(self.task.problems("train", settings.train_problems, seed))
        heldout = list(self.task.problems("heldout", settings.eval_problems, HELDOUT_SEED))
        self.train_problems, self.train_prompts = self.fitting_problems(train, "training")
        self.eval_problems, self.eval_prompts = self.fitting_problems(heldout, "held-out")
        if len(self.train_problems) < settings.prompts_per_step:
            raise ScratchLMError(
                f"task {settings.task} has {len(self.train_problems)} training problem(s) that "
                f"fit the context, fewer than --prompts-per-step {settings.prompts_per_step}; "
                "lower --prompts-per-step or give more problems"
            )
        self.loader = RolloutLoader(
            len(self.train_problems),
            prompts_per_step=settings.prompts_per_step,
            group_size=settings.group_size,
            micro_batch=self.config.batch_size,
            updates_per_batch=settings.updates_per_batch,
            seed=seed,
            sample=self.sample_rollout,
        )
        self.accumulation = self.loader.micro_batches
        self.supervised = False
        self.data_summary = (
            f"task {settings.task}: {len(self.train_problems):,} training problems, "
            f"{len(self.eval_problems):,} held out; {settings.prompts_per_step} prompts x "
            f"{settings.group_size} replies per step"
        )

    def fitting_problems(
        self, problems: list[Problem], split: str
    ) -> tuple[list[Problem], list[list[int]]]:
        """The problems whose prompt (rendered as a user turn + the generation prompt) leaves
        room for a reply in the context, and their prompt ids."""
        kept: list[Problem] = []
        prompts: list[list[int]] = []
        context = self.model_config.context_length
        for problem in problems:
            ids, _ = render(
                [{"role": "user", "content": problem.prompt}],
                self.tokenizer,
                add_generation_prompt=True,
            )
            if len(ids) < context:
                kept.append(problem)
                prompts.append(ids)
        if not kept:
            raise ScratchLMError(
                f"no {split} problem of task {self.settings.task} fits the model's context "
                f"({context} tokens); use a model with a longer context or shorter problems"
            )
        if len(kept) < len(problems):
            self.log(
                f"note: {len(problems) - len(kept)} {split} problem(s) longer than the context "
                f"({context} tokens) were left out"
            )
        return kept, prompts

    def generate(
        self, prompts: Sequence[list[int]], sampling: SamplingSettings, seeds: Sequence[int]
    ) -> list[Reply]:
        """Replies from the current model in eval mode (its train/eval mode is kept)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self.autocast:
                return sample_replies(
                    self.model,
                    prompts,
                    sampling=sampling,
                    max_new_tokens=self.settings.max_new_tokens,
                    seeds=seeds,
                    end_id=end_of_turn_id(self.tokenizer),
                )
        finally:
            self.model.train(was_training)

    def reply_text(self, reply: Reply) -> str:
        ids = reply.token_ids
        if ids and ids[-1] == end_of_turn_id(self.tokenizer):
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special=True)

    def score(self, reply: Reply, problem: Problem) -> float:
        """The reward of one reply; anything but a finite number is a one-line error."""
        value = self.reward(self.reply_text(reply), problem)
        number = float(value) if isinstance(value, (int, float)) else math.nan
        if not math.isfinite(number):
            name = getattr(self.reward, "__qualname__", None) or repr(self.reward)
            module = getattr(self.reward, "__module__", None)
            raise ScratchLMError(
                f"the reward function {f'{module}.{name}' if module else name} returned "
                f"{value!r}; a reward must be a finite number (fix the function or --reward)"
            )
        return number

    def sample_rollout(self, indices: list[int], number: int) -> Rollout:
        """Rollout batch `number`: G replies to each problem of `indices`, scored."""
        settings = self.settings
        group = settings.group_size
        problems = [self.train_problems[index] for index in indices for _ in range(group)]
        prompts = [self.train_prompts[index] for index in indices for _ in range(group)]
        seeds = [row_seed("rollout", self.config.seed, number, row) for row in range(len(prompts))]
        sampling = SamplingSettings(temperature=settings.temperature, top_k=None)
        replies = self.generate(prompts, sampling, seeds)
        rewards = torch.tensor(
            [self.score(reply, problem) for reply, problem in zip(replies, problems, strict=True)]
        )
        advantages = group_advantages(rewards.view(-1, group), normalize_std=not settings.no_std)
        rollout = build_rollout(
            prompts, replies, rewards, advantages.view(-1), self.tokenizer.pad_id
        )
        if settings.kl > 0:
            rollout.ref_logprobs = self.reference_logprobs(rollout)
        totals = self.totals
        totals.rows += len(replies)
        totals.reward_sum += float(rewards.sum())
        totals.reward_squares += float(rewards.square().sum())
        totals.groups += len(indices)
        totals.groups_with_signal += int(advantages.ne(0).any(dim=1).sum())
        totals.reply_tokens += sum(len(reply.token_ids) for reply in replies)
        return rollout

    def frozen_base_model(self) -> GPT:
        """The starting model's weights, frozen: the KL reference when all weights train."""
        model = self.base_model()
        model.requires_grad_(False)
        return model.eval()

    @torch.no_grad()
    def reference_logprobs(self, rollout: Rollout) -> torch.Tensor:
        """log p_ref of every target (N, T - 1) under the starting model, once per rollout."""
        vocab = self.model_config.vocab_size
        outputs = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, rollout.ids.shape[0], self.config.batch_size):
                ids = rollout.ids[start : start + self.config.batch_size].to(self.device)
                with self.autocast:
                    if self.reference is not None:
                        logits = self.reference(ids[:, :-1])
                    else:
                        with adapters_disabled(self.model):
                            logits = self.model(ids[:, :-1])
                outputs.append(target_logprobs(logits, ids[:, 1:], vocab).cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(outputs)

    # --- the loss and the step ---------------------------------------------------------------------
    def batch_loss(self, batch: RolloutBatch) -> torch.Tensor:
        rows, settings = batch.rows, self.settings
        ids = rows.ids.to(self.device, non_blocking=True)
        logits = self.forward(ids[:, :-1])  # (B, T - 1, padded_vocab)
        logprobs = target_logprobs(logits, ids[:, 1:], self.model_config.vocab_size)
        ref = rows.ref_logprobs
        loss, stats = policy_loss(
            logprobs,
            rows.mask.to(self.device),
            rows.advantages.to(self.device),
            normalizer=batch.normalizer,
            old_logprobs=None if batch.on_policy else rows.old_logprobs.to(self.device),
            clip=settings.clip,
            ref_logprobs=None if ref is None else ref.to(self.device),
            kl=settings.kl,
        )
        self.totals.loss_tokens += stats.tokens
        self.totals.clipped += stats.clipped
        self.totals.kl += stats.kl
        # The trainer divides each micro-batch's loss by the accumulation; the normalizer
        # already spreads the batch over its micro-batches.
        return loss * self.accumulation

    def train_step(self, learning_rate: float) -> tuple[float, float, str | None]:
        """The trainer's step, except that a batch without a single non-zero advantage (every
        group's rewards equal) is not a step at all: no update, no weight decay."""
        rollout = self.loader.rollout()
        # What the trainer adds to its token count (and tokens/s) after this step: the prompt and
        # reply tokens trained on, not its pretraining batch geometry (rows x context).
        self.tokens_per_step = int(rollout.lengths.sum()) if rollout.has_signal else 0
        if not rollout.has_signal:
            self.loader.skip_update()
            self.optimizer.zero_grad(set_to_none=True)
            self.totals.skipped += 1
            return 0.0, 0.0, None
        return super().train_step(learning_rate)

    def train_metrics(self) -> dict[str, float]:
        totals, self.totals = self.totals, _Totals()
        metrics: dict[str, float] = {"skipped_steps": totals.skipped}
        if totals.rows:
            mean = totals.reward_sum / totals.rows
            variance = max(totals.reward_squares / totals.rows - mean * mean, 0.0)
            metrics.update(
                reward_mean=mean,
                reward_std=math.sqrt(variance),
                signal_fraction=totals.groups_with_signal / max(totals.groups, 1),
                reply_tokens=totals.reply_tokens / totals.rows,
            )
        if totals.loss_tokens:
            if self.settings.kl > 0:
                metrics["kl"] = totals.kl / totals.loss_tokens
            if self.settings.updates_per_batch > 1:
                metrics["clip_fraction"] = totals.clipped / totals.loss_tokens
        return metrics

    # --- evaluation ---------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """pass@1 (greedy), pass@k (n samples at the training temperature) and the mean reward
        on the held-out problems; val_loss = 1 - pass@1 (best/ keeps the lowest)."""
        settings = self.settings
        problems, prompts = self.eval_problems, self.eval_prompts
        greedy = self.generate(
            prompts, SamplingSettings(temperature=0.0, top_k=None), [0] * len(prompts)
        )
        greedy_rewards = [
            self.score(reply, problem) for reply, problem in zip(greedy, problems, strict=True)
        ]
        n, k = settings.samples_per_eval_problem, settings.k
        sampled = self.generate(
            [prompt for prompt in prompts for _ in range(n)],
            SamplingSettings(temperature=settings.temperature, top_k=None),
            # the same seeds at every evaluation: the numbers move with the model, not the draw
            [
                row_seed("eval", self.config.seed, i, j)
                for i in range(len(prompts))
                for j in range(n)
            ],
        )
        sampled_rewards = [
            self.score(reply, problems[index // n]) for index, reply in enumerate(sampled)
        ]
        passes = [
            sum(reward >= PASS_REWARD for reward in sampled_rewards[i * n : (i + 1) * n])
            for i in range(len(problems))
        ]
        pass_1 = sum(reward >= PASS_REWARD for reward in greedy_rewards) / len(problems)
        pass_k = sum(pass_at_k(n, passed, k) for passed in passes) / len(problems)
        prompt = problems[0].prompt
        if len(prompt) > SAMPLE_PROMPT_CHARS:  # a story-qa prompt is a whole story
            prompt = prompt[:SAMPLE_PROMPT_CHARS].rstrip() + " ..."
        self.last_sample = (
            f"{prompt}\n-> {self.reply_text(greedy[0])}  [reward {greedy_rewards[0]:g}]"
        )
        metrics = {
            "val_loss": 1.0 - pass_1,
            "pass@1": pass_1,
            "pass@k": pass_k,
            "pass_k": k,
            # pass@1 of the sampled replies (c / n): moves before the greedy reply does
            "sampled_pass@1": sum(passes) / (n * len(problems)),
            "reward_mean": sum(sampled_rewards) / len(sampled_rewards),
            "greedy_reward_mean": sum(greedy_rewards) / len(greedy_rewards),
        }
        self.log(f"held-out: {describe_evaluation(metrics)}")
        return metrics

    def sample(self) -> str:
        """The eval record's sample: the first held-out problem, the greedy reply, its reward."""
        return self.last_sample

    # --- checkpoints and the run --------------------------------------------------------------------
    def step_summary(self) -> str:
        settings = self.settings
        return (
            f"{settings.prompts_per_step} prompts x {settings.group_size} replies per rollout "
            f"(up to {settings.max_new_tokens} new tokens), {settings.updates_per_batch} "
            f"update(s) each, {self.config.batch_size} rows per forward"
        )

    def checkpoint_metadata(self) -> dict[str, Any]:
        metadata = super().checkpoint_metadata()  # its "data" is "task:NAME" (see __init__)
        metadata["rl"] = self.settings.as_dict()
        return metadata

    def restore_model(self, checkpoint_dir: Path) -> None:
        metadata = json.loads((checkpoint_dir / "config.json").read_text(encoding="utf-8"))
        saved = metadata.get("rl") if isinstance(metadata, dict) else None
        if not isinstance(saved, dict):
            raise ScratchLMError(
                f"--resume: {checkpoint_dir} was not written by `scratchlm rl`; choose a new --out"
            )
        ours = self.settings.as_dict()
        changed = [name for name in RLSettings.TRAINING if saved.get(name) != ours[name]]
        if changed:
            differences = ", ".join(
                f"--{name.replace('_', '-')} {ours[name]!r} (was {saved.get(name)!r})"
                for name in changed
            )
            raise ScratchLMError(
                f"--resume with different RL settings than the run was started with: "
                f"{differences}; resume with the original settings or start a new run with "
                "another --out"
            )
        super().restore_model(checkpoint_dir)

    def run(self, *, max_time_s: float | None = None) -> TrainingResult:
        """The trainer's run, after measuring the starting model once on a fresh run (an
        `rl_before` record; not counted in the run's time)."""
        if self.state.step == 0 and not self.state.finished:
            before = self.evaluate()
            if self.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                metrics = MetricsLogger(self.run_dir, tensorboard=self.config.tensorboard)
                record = {"kind": "rl_before", "step": 0, **before, "sample": self.last_sample}
                metrics.log({**record, "time": time.time()})
                metrics.close()
            self.log(f"before RL: {describe_evaluation(before)}")
        return super().run(max_time_s=max_time_s)


def describe_evaluation(metrics: dict[str, Any]) -> str:
    return (
        f"pass@1 {metrics['pass@1']:.3f} (sampled {metrics['sampled_pass@1']:.3f}), "
        f"pass@{metrics['pass_k']} {metrics['pass@k']:.3f}, mean reward "
        f"{metrics['reward_mean']:.3f}"
    )


# --- the entry point -------------------------------------------------------------------------------


@dataclass
class RLResult(TrainingResult):
    """The run's result with the held-out numbers of the starting model (`before`: the run's
    rl_before record) and of the last evaluation (`after`)."""

    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


def rl(
    config: TrainConfig,
    *,
    base: str,
    settings: RLSettings,
    lora: LoRASettings | None = None,
    log: Callable[[str], None] = print,
    task: Task | None = None,
    reward: RewardFunction | None = None,
) -> RLResult:
    """Run (or resume) RL on `settings.task` from the checkpoint `base`. `task` and `reward`
    replace the named task and reward (a Python caller's own objects)."""
    if task is None:
        task = load_task(settings.task, settings.task_data)
    if reward is None:
        reward = resolve_reward(settings.reward, task)
    trainer = RLTrainer(
        config, base=base, settings=settings, task=task, reward=reward, lora=lora, log=log
    )
    result = trainer.run()
    records = read_jsonl(result.run_dir / "metrics.jsonl")
    before = [record for record in records if record.get("kind") == "rl_before"]
    after = [record for record in records if record.get("kind") == "eval"]
    values = {item.name: getattr(result, item.name) for item in dataclasses.fields(result)}
    return RLResult(
        **values,
        before=before[-1] if before else None,
        after=after[-1] if after else None,
    )
