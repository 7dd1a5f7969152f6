"""Preference tuning: chosen/rejected pairs -> DPO, IPO or SimPO on top of the fine-tuning trainer.

Direct preference optimisation (Rafailov et al. 2023) raises the policy's log-probability of the
chosen reply over the rejected one, measured against a frozen reference (the starting model):

    sigmoid (DPO):  -logsigmoid(beta * ((pc - rc) - (pr - rr)))           summed log-probs
    ipo (IPO):      ((pc - rc) - (pr - rr) - 1 / (2 * beta)) ** 2          length-averaged, as TRL
    simpo (SimPO):  -logsigmoid(beta * (avg_pc - avg_pr) - gamma)          no reference at all

The data: `{prompt, chosen, rejected}` (prompt a string or a messages list), Alpaca-like
`{instruction, input, chosen, rejected}`, or `chosen`/`rejected` as whole conversations (the
hh-rlhf / UltraFeedback-binarized shape), in any file `records.read_records` reads. Each side is
rendered by the one chat template as prompt + [assistant: reply]; the loss falls on the final reply
and its end marker only.

The reference model is never in memory during training: its per-sequence log-probabilities for
every pair are computed once, before training, and cached in RUN/reference_logprobs.safetensors
(keyed by the base weights, the tokens and the settings), so --resume reuses them. Everything else
(checkpoints, best/, metrics, exact resume, LoRA, gradient accumulation, DDP) is the fine-tuning
trainer's; a batch of B pairs is one forward of 2B rows: the chosen rows, then the rejected rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from scratchlm.chat_template import Message, render
from scratchlm.checkpoint import read_metadata
from scratchlm.device import autocast_context
from scratchlm.errors import ScratchLMError
from scratchlm.finetune import records as record_files
from scratchlm.finetune.datasets import (
    IGNORE,
    Example,
    SFTLoader,
    make_batch,
    parse_messages,
    split_examples,
)
from scratchlm.finetune.lora import LoRASettings
from scratchlm.finetune.settings import (
    DPO_DEFAULT_BETA,
    DPO_FULL_LR,
    DPO_LORA_LR,
    DPO_LOSSES,
    SIMPO_DEFAULT_BETA,
)
from scratchlm.finetune.trainer import FinetuneTrainer
from scratchlm.io_utils import atomic_write_bytes
from scratchlm.model import GPT
from scratchlm.tokenizer import Tokenizer, require_unicode
from scratchlm.training.run_config import TrainConfig
from scratchlm.training.trainer import TrainingResult

LOSSES = DPO_LOSSES
REFERENCE_FILE = "reference_logprobs.safetensors"


# --- settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DPOSettings:
    """The preference loss: `loss` sigmoid (DPO), ipo or simpo; `beta` None means 0.1 (2.0 for
    simpo); `simpo_gamma` is SimPO's target margin (used by simpo only)."""

    loss: str = "sigmoid"
    beta: float | None = None
    simpo_gamma: float = 0.5

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ScratchLMError(f"--loss {self.loss!r} is unknown; use one of {', '.join(LOSSES)}")
        if self.beta is not None and not (math.isfinite(self.beta) and self.beta > 0):
            raise ScratchLMError(f"--beta must be a positive number (got {self.beta})")
        if not math.isfinite(self.simpo_gamma):
            raise ScratchLMError(f"--simpo-gamma must be a finite number (got {self.simpo_gamma})")

    @property
    def resolved_beta(self) -> float:
        if self.beta is not None:
            return float(self.beta)
        return SIMPO_DEFAULT_BETA if self.loss == "simpo" else DPO_DEFAULT_BETA

    @property
    def uses_reference(self) -> bool:
        return self.loss != "simpo"

    def as_dict(self) -> dict[str, Any]:
        """What checkpoints record (and --resume compares): the resolved values."""
        values: dict[str, Any] = {"loss": self.loss, "beta": self.resolved_beta}
        if self.loss == "simpo":
            values["simpo_gamma"] = float(self.simpo_gamma)
        return values


# --- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferencePair:
    """A prompt (messages ending with the user's turn) and two candidate replies to it."""

    prompt: list[Message]
    chosen: str
    rejected: str
    where: str


def _prompt_messages(value: object, where: str) -> list[Message]:
    """A `prompt` field: a string (one user message) or a messages list ending with the user."""
    if isinstance(value, str):
        return [Message(role="user", content=value)]
    if isinstance(value, list):
        messages = parse_messages(value, f"{where} prompt")
        if messages[-1]["role"] != "user":
            raise ScratchLMError(
                f"{where}: the prompt conversation must end with a user message (the replies "
                "answer it)"
            )
        return messages
    raise ScratchLMError(
        f"{where}: 'prompt' must be a string or a list of messages, got {type(value).__name__}"
    )


def record_to_pair(record: dict[str, Any], where: str) -> PreferencePair:
    """One record in any of the three accepted shapes (see the module docstring)."""
    if "chosen" not in record or "rejected" not in record:
        raise ScratchLMError(
            f"{where}: a preference record needs 'chosen' and 'rejected' (keys found: "
            f"{', '.join(sorted(record)) or 'none'}); use {{prompt, chosen, rejected}}, "
            "{instruction, input, chosen, rejected} or chosen/rejected conversations"
        )
    chosen, rejected = record["chosen"], record["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        if "prompt" in record:
            prompt = _prompt_messages(record["prompt"], where)
        elif "instruction" in record:
            # the Alpaca convention of datasets.record_to_messages; `output` (the SFT reply) is unused
            text = str(record["instruction"])
            if record.get("input"):
                text += "\n\n" + str(record["input"])
            prompt = [Message(role="user", content=text)]
        else:
            raise ScratchLMError(
                f"{where}: chosen and rejected are strings but there is no 'prompt' or "
                "'instruction' they answer; add one"
            )
        pair = PreferencePair(prompt, chosen, rejected, where)
    elif isinstance(chosen, list) and isinstance(rejected, list):
        pair = _conversation_pair(record, chosen, rejected, where)
    else:
        raise ScratchLMError(
            f"{where}: 'chosen' and 'rejected' must both be strings or both be conversations "
            f"(lists of messages), got {type(chosen).__name__} and {type(rejected).__name__}"
        )
    for message in pair.prompt:
        require_unicode(message["content"], where)
    require_unicode(pair.chosen, where)
    require_unicode(pair.rejected, where)
    return pair


def _conversation_pair(
    record: dict[str, Any], chosen: list[Any], rejected: list[Any], where: str
) -> PreferencePair:
    """hh-rlhf / UltraFeedback-binarized: two conversations that share everything up to their
    final assistant message; that shared prefix is the prompt."""
    sides = []
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        messages = parse_messages(value, f"{where} {name}")
        if messages[-1]["role"] != "assistant":
            raise ScratchLMError(
                f"{where}: the {name} conversation must end with the assistant's reply"
            )
        sides.append(messages)
    prefix = sides[0][:-1]
    if prefix != sides[1][:-1]:
        raise ScratchLMError(
            f"{where}: the chosen and rejected conversations differ before their final "
            "assistant message; they must share the prompt and differ only in the last reply"
        )
    if not prefix:
        if not isinstance(record.get("prompt"), str):
            raise ScratchLMError(
                f"{where}: the conversations hold only the replies; add the user's turn to them "
                "or a 'prompt' string"
            )
        prefix = [Message(role="user", content=record["prompt"])]
    elif prefix[-1]["role"] != "user":
        raise ScratchLMError(
            f"{where}: the final assistant message must answer a user message (the one before "
            f"it is {prefix[-1]['role']!r})"
        )
    return PreferencePair(prefix, sides[0][-1]["content"], sides[1][-1]["content"], where)


def read_preferences(source: str | Path) -> list[PreferencePair]:
    """Every record of a .jsonl/.jsonl.gz/.json file or hf:NAME dataset as a preference pair; a
    bad record is a one-line ScratchLMError naming it (file:line or record N)."""
    return [record_to_pair(record, where) for where, record in record_files.read_records(source)]


@dataclass
class TokenizedPair:
    """Both sides rendered: `chosen`/`rejected` hold (ids, mask) with the mask on the final reply
    and its end marker only; `prompt_ids` is the prompt with the generation prompt."""

    chosen: Example
    rejected: Example
    prompt_ids: list[int]


@dataclass
class TokenizeNotes:
    identical: int = 0  # chosen == rejected: no preference, zero gradient
    cut: int = 0  # longer than the context: cut to context_length + 1 tokens
    dropped: int = 0  # cut so far that a side kept no reply token

    def lines(self, context_length: int) -> list[str]:
        notes = []
        if self.identical:
            notes.append(
                f"note: {self.identical} pair(s) with chosen identical to rejected left out "
                "(they carry no preference)"
            )
        if self.cut:
            notes.append(
                f"note: {self.cut} pair(s) longer than the context ({context_length} tokens) were cut"
            )
        if self.dropped:
            notes.append(
                f"note: {self.dropped} pair(s) left out: a reply starts beyond the context "
                f"({context_length} tokens)"
            )
        return notes


def render_side(
    prompt: list[Message], reply: str, tokenizer: Tokenizer
) -> tuple[list[int], list[int], list[int]]:
    """(ids, mask, prompt_ids) of prompt + [assistant: reply]: the template's mask restricted to
    the positions after the prompt (rendered with its generation prompt), so earlier assistant
    turns of a conversation carry no loss."""
    prompt_ids, _ = render(prompt, tokenizer, add_generation_prompt=True)
    ids, mask = render([*prompt, Message(role="assistant", content=reply)], tokenizer)
    # Where the two renderings part: the generation prompt's length, or one less when a reply
    # starting with whitespace merged with the newline after <|assistant|> (that token holds
    # reply text, and the template marks it learned).
    shared = 0
    for a, b in zip(prompt_ids, ids, strict=False):
        if a != b:
            break
        shared += 1
    return ids, [0] * shared + mask[shared:], prompt_ids


def tokenize_pairs(
    pairs: Sequence[PreferencePair], tokenizer: Tokenizer, context_length: int
) -> tuple[list[TokenizedPair], TokenizeNotes]:
    notes = TokenizeNotes()
    tokenized = []
    for pair in pairs:
        if pair.chosen == pair.rejected:
            notes.identical += 1
            continue
        sides = []
        cut = False
        prompt_ids: list[int] = []
        for reply in (pair.chosen, pair.rejected):
            ids, mask, prompt_ids = render_side(pair.prompt, reply, tokenizer)
            if len(ids) > context_length + 1:
                ids, mask, cut = ids[: context_length + 1], mask[: context_length + 1], True
            sides.append(Example(ids, mask))
        notes.cut += cut
        if any(sum(side.mask[1:]) == 0 for side in sides):
            notes.dropped += 1
            continue
        tokenized.append(TokenizedPair(sides[0], sides[1], prompt_ids))
    return tokenized, notes


@dataclass
class PreferenceBatch:
    """B pairs as one forward: `inputs`/`targets` (2B, T), the chosen rows first, then the
    rejected rows (targets -100 off the replies); `reference` (2B,) the reference model's summed
    log-probs of the same rows (zeros when the loss needs none); `index` (B,) the pairs'
    positions in their list."""

    inputs: torch.Tensor
    targets: torch.Tensor
    reference: torch.Tensor
    index: torch.Tensor


def collate_pairs(
    pairs: Sequence[TokenizedPair],
    indices: Sequence[int],
    reference: torch.Tensor | None,
    pad_id: int,
) -> PreferenceBatch:
    """`reference`: (N, 2) summed log-probs [chosen, rejected] of the whole list, or None."""
    inputs, targets = make_batch(
        [pair.chosen for pair in pairs] + [pair.rejected for pair in pairs], pad_id
    )
    index = torch.tensor(list(indices), dtype=torch.long)
    if reference is None:
        ref = torch.zeros(2 * len(pairs))
    else:
        ref = torch.cat([reference[index, 0], reference[index, 1]])
    return PreferenceBatch(inputs, targets, ref, index)


# --- log-probabilities and the loss ---------------------------------------------------------------


def sequence_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sums, counts), each (N,): the summed log-probability of each row's targets over the
    positions that are not -100, and how many there are, over the real vocabulary (the padding
    columns are never a reply token, as in RL and the evaluation). logits (N, T, padded_vocab),
    targets (N, T)."""
    rows, length, _ = logits.shape
    # cross_entropy avoids materialising a second (N, T, V) tensor; ignored positions give 0
    nll = F.cross_entropy(
        logits[..., :vocab_size].float().reshape(-1, vocab_size),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(rows, length)
    return -nll.sum(dim=-1), (targets != IGNORE).sum(dim=-1)


def preference_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    kind: str,
    beta: float,
    gamma: float = 0.5,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The mean preference loss over B pairs, and per-pair metrics (each (B,), detached).

    Inputs are summed log-probs of each reply, (B,); ipo and simpo need the reply lengths (token
    counts) to average them. The rewards are what each loss compares: beta * (policy - ref) of
    summed (sigmoid) or averaged (ipo) log-probs, beta * the averaged log-prob (simpo)."""
    if kind in ("ipo", "simpo"):
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError(f"the {kind} loss needs chosen_lengths and rejected_lengths")
        chosen_len = chosen_lengths.to(policy_chosen.dtype).clamp(min=1)
        rejected_len = rejected_lengths.to(policy_rejected.dtype).clamp(min=1)
    if kind == "sigmoid":
        # Rafailov et al. 2023, eq. 7
        chosen_reward = beta * (policy_chosen - ref_chosen)
        rejected_reward = beta * (policy_rejected - ref_rejected)
        losses = -F.logsigmoid(chosen_reward - rejected_reward)
    elif kind == "ipo":
        # Azar et al. 2023, eq. 17, on length-averaged log-probs as TRL's DPOTrainer does
        # (concatenated_forward: `if self.loss_type == "ipo": all_logps = all_logps /
        # loss_mask.sum(-1)`, for the policy and the reference alike).
        chosen_ratio = policy_chosen / chosen_len - ref_chosen / chosen_len
        rejected_ratio = policy_rejected / rejected_len - ref_rejected / rejected_len
        losses = (chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2
        chosen_reward, rejected_reward = beta * chosen_ratio, beta * rejected_ratio
    elif kind == "simpo":
        # Meng et al. 2024, eq. 6: reference-free, length-normalised, with a target margin gamma
        chosen_reward = beta * policy_chosen / chosen_len
        rejected_reward = beta * policy_rejected / rejected_len
        losses = -F.logsigmoid(chosen_reward - rejected_reward - gamma)
    else:
        raise ValueError(f"unknown preference loss {kind!r}; use one of {', '.join(LOSSES)}")
    metrics = {
        "loss": losses.detach(),
        "reward_accuracy": (chosen_reward > rejected_reward).float().detach(),
        "reward_margin": (chosen_reward - rejected_reward).detach(),
        "logp_chosen": policy_chosen.detach(),
        "logp_rejected": policy_rejected.detach(),
    }
    return losses.mean(), metrics


@torch.no_grad()
def reference_logprobs(
    model: GPT,
    pairs: Sequence[TokenizedPair],
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    autocast: Any,
) -> torch.Tensor:
    """(N, 2) float32: the model's summed log-probs of each pair's [chosen, rejected] reply, in
    eval mode (no dropout), batched as training batches them."""
    was_training = model.training
    model.eval()
    result = torch.zeros(len(pairs), 2)
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            batch = collate_pairs(chunk, range(len(chunk)), None, pad_id)
            with autocast:
                logits = model(batch.inputs.to(device))  # (2B, T, padded_vocab)
            sums, _ = sequence_logprobs(logits, batch.targets.to(device), model.config.vocab_size)
            result[start : start + len(chunk), 0] = sums[: len(chunk)].float().cpu()
            result[start : start + len(chunk), 1] = sums[len(chunk) :].float().cpu()
    finally:
        model.train(was_training)
    return result


def pairs_within_tokens(pairs: Sequence[TokenizedPair], max_tokens: int) -> list[TokenizedPair]:
    """The first pairs whose tokens (both sides, prompt included) add up to at most `max_tokens`;
    at least one. Every evaluation (and the metrics before training) scores the same pairs."""
    kept: list[TokenizedPair] = []
    total = 0
    for pair in pairs:
        total += len(pair.chosen.ids) + len(pair.rejected.ids)
        if kept and total > max_tokens:
            break
        kept.append(pair)
    return kept


def reply_lengths(pairs: Sequence[TokenizedPair]) -> torch.Tensor:
    """(N, 2): how many tokens of each [chosen, rejected] reply the loss sees."""
    return torch.tensor(
        [[sum(pair.chosen.mask[1:]), sum(pair.rejected.mask[1:])] for pair in pairs],
        dtype=torch.long,
    )


def reference_key(
    base_identity: dict[str, Any],
    train: Sequence[TokenizedPair],
    val: Sequence[TokenizedPair],
    settings: DPOSettings,
    precision: str,
) -> str:
    """A SHA-256 over what the cached reference log-probs depend on: the base weights, the exact
    token ids and masks of every pair, the precision and the loss settings."""
    digest = hashlib.sha256()
    header = {"base": base_identity, "precision": precision, "settings": settings.as_dict()}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for split, pairs in (("train", train), ("val", val)):
        digest.update(f"|{split}:{len(pairs)}|".encode())
        for pair in pairs:
            for side in (pair.chosen, pair.rejected):
                digest.update(json.dumps([side.ids, side.mask]).encode())
    return digest.hexdigest()


def read_reference_cache(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The cached tensors when `path` holds them for `key`; None when missing or for other inputs."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("key") != key:
                return None
        return load_file(str(path))
    except (SafetensorError, OSError):
        return None


# --- the trainer ----------------------------------------------------------------------------------


@dataclass
class DPOResult(TrainingResult):
    """TrainingResult plus the held-out preference metrics before training (of the starting
    model) and at the last evaluation ({} when there was none)."""

    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)


class DPOTrainer(FinetuneTrainer):
    rows_per_example = 2  # a pair is a chosen and a rejected sequence

    def __init__(
        self,
        config: TrainConfig,
        *,
        base: str,
        settings: DPOSettings | None = None,
        lora: LoRASettings | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings or DPOSettings()
        if config.token_weighting != "none":
            raise ScratchLMError(
                "--token-weighting needs pretraining text; a preference loss weighs whole "
                "replies, drop --token-weighting"
            )
        if config.lr is None:
            config = dataclasses.replace(config, lr=DPO_LORA_LR if lora else DPO_FULL_LR)
        self._metric_sums: dict[str, torch.Tensor] = {}
        self._metric_pairs = 0
        self.before: dict[str, float] = {}
        self.after: dict[str, float] = {}
        super().__init__(config, base=base, lora=lora, log=log)

    # --- hooks ------------------------------------------------------------------------------
    def load_tokenizer(self, resume_from: Path | None) -> Tokenizer:
        if resume_from is not None:
            # Before any data or reference work: a run continues with the loss it started with.
            saved = read_metadata(resume_from).get("dpo")
            ours = self.settings.as_dict()
            if saved is None:
                raise ScratchLMError(
                    f"--resume: {resume_from} is not a dpo checkpoint; resume it with the "
                    "command that started it, or choose a new --out"
                )
            if saved != ours:
                raise ScratchLMError(
                    f"--resume with different DPO settings ({_shown(ours)}) than the run was "
                    f"started with ({_shown(saved)}); resume with the original --loss/--beta/"
                    "--simpo-gamma or start a new run with another --out"
                )
        return super().load_tokenizer(resume_from)

    def setup_data(self) -> None:
        # Runs inside distributed.main_process_first: rank 0 computes and writes the reference
        # cache, the other ranks then find it.
        context = self.model_config.context_length
        pairs, notes = tokenize_pairs(read_preferences(self.config.data), self.tokenizer, context)
        if self.config.val_data:
            train = pairs
            val, val_notes = tokenize_pairs(
                read_preferences(self.config.val_data), self.tokenizer, context
            )
            if val_notes.identical or val_notes.dropped:
                self.log(
                    f"note: {val_notes.identical + val_notes.dropped} held-out pair(s) left out "
                    "(identical replies, or a reply beyond the context)"
                )
        else:
            train, val = split_examples(pairs, self.config.val_fraction, self.config.seed)
        for line in notes.lines(context):
            self.log(line)
        if not val:
            raise ScratchLMError(
                "no held-out preference pairs to evaluate on; pass --val-data, or give --data at "
                "least two usable pairs"
            )
        evaluated = pairs_within_tokens(val, self.config.eval_tokens)
        if len(evaluated) < len(val):
            self.log(
                f"note: evaluating the first {len(evaluated)} of {len(val)} held-out pairs "
                f"(--eval-tokens {self.config.eval_tokens:,}); raise it to evaluate more"
            )
            val = evaluated
        self.train_pairs, self.val_pairs = train, val
        self.train_lengths, self.val_lengths = reply_lengths(train), reply_lengths(val)
        self.train_reference, self.val_reference = self._reference(train, val)
        pad_id = self.tokenizer.pad_id
        reference = self.train_reference if self.settings.uses_reference else None
        # the loader shuffles (index, pair): the index finds the pair's reference log-probs
        self.loader = SFTLoader(
            list(enumerate(train)),
            batch_size=self.config.batch_size,
            seed=self.config.seed,
            pad_id=pad_id,
            rank=self.distributed.rank,
            world_size=self.distributed.world_size,
            collate=lambda chosen: collate_pairs(
                [pair for _, pair in chosen], [index for index, _ in chosen], reference, pad_id
            ),
        )
        learned = int(self.train_lengths.sum())
        self.data_summary = (
            f"{len(train):,} training pairs ({learned:,} reply tokens), {len(val):,} held out | "
            f"{self.settings.loss} loss, beta {self.settings.resolved_beta:g}"
        )

    def _base_identity(self) -> dict[str, Any]:
        """The base weights' recorded SHA-256, or (old checkpoints) their path, size and mtime."""
        checksum = (self.base_metadata.get("checksums") or {}).get("model.safetensors")
        if checksum:
            return {"sha256": checksum}
        stat = (self.base_dir / "model.safetensors").stat()
        return {"path": str(self.base_dir), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def _reference(
        self, train: list[TokenizedPair], val: list[TokenizedPair]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(train (N, 2), val (M, 2)) reference log-probs, from the cache when it matches. SimPO
        trains without them; its held-out ones give the metrics before training."""
        path = self.run_dir / REFERENCE_FILE
        need_train = self.settings.uses_reference
        key = reference_key(
            self._base_identity(), train if need_train else [], val, self.settings, self.precision
        )
        cached = read_reference_cache(path, key)
        if cached is not None:
            train_ref = cached.get("train", torch.zeros(len(train), 2))
            return train_ref, cached["val"]
        if self.config.resume and path.is_file():
            raise ScratchLMError(
                f"--resume: {path} holds the reference log-probs of other data or another base "
                "checkpoint (or is damaged); resume with the run's original --data, --val-data, "
                "--eval-tokens and --checkpoint, or start a new run with another --out"
            )
        self.log(
            f"reference log-probs of the starting model: {len(train) if need_train else 0} "
            f"training + {len(val)} held-out pairs (computed once, cached in {path})"
        )
        model = self.base_model()  # plain: LoRA's adapters start at zero, the same model
        autocast = autocast_context(self.precision, self.device)
        tensors: dict[str, torch.Tensor] = {}
        for name, pairs in (("val", val), ("train", train if need_train else None)):
            if pairs is not None:
                tensors[name] = reference_logprobs(
                    model,
                    pairs,
                    batch_size=self.config.batch_size,
                    pad_id=self.tokenizer.pad_id,
                    device=self.device,
                    autocast=autocast,
                )
        del model  # the reference model is gone before the policy is built
        if self.is_main:
            atomic_write_bytes(path, save(tensors, metadata={"key": key}))
        return tensors.get("train", torch.zeros(len(train), 2)), tensors["val"]

    def batch_loss(self, batch: PreferenceBatch) -> torch.Tensor:
        pairs = len(batch.index)
        logits = self.forward(batch.inputs.to(self.device, non_blocking=True))  # (2B, T, V)
        sums, _ = sequence_logprobs(
            logits,
            batch.targets.to(self.device, non_blocking=True),
            self.model_config.vocab_size,
        )
        lengths = self.train_lengths[batch.index].to(self.device)  # (B, 2)
        reference = batch.reference.to(self.device)
        loss, metrics = self._loss(sums, reference, lengths, pairs)
        for name in ("reward_accuracy", "reward_margin", "logp_chosen", "logp_rejected"):
            total = metrics[name].sum()
            self._metric_sums[name] = self._metric_sums.get(name, torch.zeros_like(total)) + total
        self._metric_pairs += pairs
        return loss

    def _loss(
        self, sums: torch.Tensor, reference: torch.Tensor, lengths: torch.Tensor, pairs: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """sums, reference (2B,): chosen rows then rejected rows; lengths (B, 2)."""
        return preference_loss(
            sums[:pairs],
            sums[pairs:],
            reference[:pairs],
            reference[pairs:],
            kind=self.settings.loss,
            beta=self.settings.resolved_beta,
            gamma=self.settings.simpo_gamma,
            chosen_lengths=lengths[:, 0],
            rejected_lengths=lengths[:, 1],
        )

    def train_metrics(self) -> dict[str, float]:
        if not self._metric_pairs:
            return {}
        values = {
            name: float(total) / self._metric_pairs for name, total in self._metric_sums.items()
        }
        self._metric_sums, self._metric_pairs = {}, 0
        return values

    def preference_metrics(self, policy: torch.Tensor) -> dict[str, float]:
        """The held-out metrics of a model whose summed log-probs of the held-out pairs are
        `policy` (M, 2)."""
        reference = self.val_reference.to(policy.device)
        lengths = self.val_lengths.to(policy.device)
        _, metrics = preference_loss(
            policy[:, 0],
            policy[:, 1],
            reference[:, 0],
            reference[:, 1],
            kind=self.settings.loss,
            beta=self.settings.resolved_beta,
            gamma=self.settings.simpo_gamma,
            chosen_lengths=lengths[:, 0],
            rejected_lengths=lengths[:, 1],
        )
        per_token = policy / lengths.clamp(min=1)  # (M, 2) mean log-prob per reply token
        return {
            "val_loss": float(metrics["loss"].mean()),
            "val_reward_accuracy": float(metrics["reward_accuracy"].mean()),
            "val_reward_margin": float(metrics["reward_margin"].mean()),
            # Summed log-probs favour the shorter reply whatever its quality; the per-token
            # comparison (SimPO's reward) is the length-fair one.
            "val_preference_accuracy": float((policy[:, 0] > policy[:, 1]).float().mean()),
            "val_preference_accuracy_per_token": float(
                (per_token[:, 0] > per_token[:, 1]).float().mean()
            ),
        }

    def evaluate(self) -> dict[str, float]:
        policy = reference_logprobs(
            self.model,
            self.val_pairs,
            batch_size=self.config.batch_size,
            pad_id=self.tokenizer.pad_id,
            device=self.device,
            autocast=self.autocast,
        )
        self.after = self.preference_metrics(policy)
        return self.after

    def default_sample_prompt(self) -> list[int]:
        return self.val_pairs[0].prompt_ids[-(self.model_config.context_length // 2) :]

    def val_bytes_per_token(self) -> float | None:
        return None

    def step_summary(self) -> str:
        world = self.distributed.world_size
        return (
            f"{self.config.batch_size} pairs x 2 sequences x {self.accumulation} micro-batches"
            + (f" x {world} ranks" if self.distributed.enabled else "")
            + " per step"
        )

    def checkpoint_metadata(self) -> dict[str, Any]:
        return {
            "finetune": {
                "base": str(self.base_dir),
                "data": self.config.data,
                "supervised": True,
                "lora": self.lora.as_dict() if self.lora is not None else None,
            },
            "dpo": self.settings.as_dict(),
        }

    def run(self, *, max_time_s: float | None = None) -> DPOResult:
        # The starting model's held-out metrics come free from the reference log-probs.
        self.before = self.preference_metrics(self.val_reference)
        if self.state.step == 0 and not self.state.finished:
            self.log(
                f"before training ({len(self.val_pairs)} held-out pairs): preference accuracy "
                f"{self.before['val_preference_accuracy']:.3f}, {self.settings.loss} loss "
                f"{self.before['val_loss']:.4f}"
            )
            if self.is_main:
                from scratchlm.training.metrics import MetricsLogger

                self.run_dir.mkdir(parents=True, exist_ok=True)
                MetricsLogger(self.run_dir).log(
                    {"kind": "preference_before", "step": 0, **self.before}
                )
        result = super().run(max_time_s=max_time_s)
        return DPOResult(
            **{item.name: getattr(result, item.name) for item in dataclasses.fields(result)},
            before=self.before,
            after=self.after,
        )


def _shown(values: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())


def dpo(
    config: TrainConfig,
    *,
    base: str,
    settings: DPOSettings | None = None,
    lora: LoRASettings | None = None,
    log: Callable[[str], None] = print,
) -> DPOResult:
    return DPOTrainer(config, base=base, settings=settings, lora=lora, log=log).run()
