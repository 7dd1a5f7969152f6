"""Loss, perplexity and bits per byte of a model on token windows or on a whole text."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scratchlm.model import GPT
from scratchlm.tokenizer import Tokenizer

# (model, inputs (B, T) on the CPU) -> logits (B, T, padded vocab), or None where it does not apply
FastLogits = Callable[[GPT, torch.Tensor], "torch.Tensor | None"]


@dataclass
class EvaluationResult:
    loss: float  # mean nats per predicted token
    tokens: int  # predicted tokens
    bytes: int | None = None  # UTF-8 bytes of the evaluated text, when known

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def bits_per_byte(self) -> float | None:
        if not self.bytes:
            return None
        return self.loss * self.tokens / (math.log(2) * self.bytes)

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
            "tokens": self.tokens,
        }


@torch.no_grad()
def evaluate_batches(
    model: GPT,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    autocast: contextlib.AbstractContextManager[object] | None = None,
    total_bytes: int | None = None,
    fast_logits: FastLogits | None = None,
) -> EvaluationResult:
    """Sum of token losses over (inputs, targets) batches, each (B, T). `fast_logits(model,
    inputs)`: the logits by another way than the model's forward (the decode kernels for a
    quantized model: `scratchlm.inference.kernels.decoder.kernel_logits`), or None to use it."""
    was_training = model.training
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for inputs, targets in batches:
        logits = fast_logits(model, inputs) if fast_logits and device.type == "cpu" else None
        inputs, targets = inputs.to(device), targets.to(device)
        if logits is None:
            with autocast or contextlib.nullcontext():
                logits = model(inputs)
        # (B, T, padded vocab) -> (B, T, vocab): the padding rows are no token, so they get no
        # probability (as in sampling and the benchmark scorer).
        logits = logits[..., : model.config.vocab_size]
        # -100 marks positions without a target (fine-tuning prompts and padding)
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            reduction="sum",
            ignore_index=-100,
        )
        total_loss += float(loss)
        total_tokens += int((targets != -100).sum())
    model.train(was_training)
    if total_tokens == 0:
        return EvaluationResult(float("nan"), 0, total_bytes)
    return EvaluationResult(total_loss / total_tokens, total_tokens, total_bytes)


def text_windows(
    token_ids: list[int], context_length: int, batch_size: int
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows covering every token after the first exactly once; the last window
    is shorter when the text does not divide evenly (batched by length)."""
    windows: list[tuple[list[int], list[int]]] = []
    for start in range(0, max(0, len(token_ids) - 1), context_length):
        chunk = token_ids[start : start + context_length + 1]
        if len(chunk) >= 2:
            windows.append((chunk[:-1], chunk[1:]))
    full = [window for window in windows if len(window[0]) == context_length]
    partial = [window for window in windows if len(window[0]) != context_length]
    for index in range(0, len(full), batch_size):
        group = full[index : index + batch_size]
        yield (
            torch.tensor([inputs for inputs, _ in group], dtype=torch.long),
            torch.tensor([targets for _, targets in group], dtype=torch.long),
        )
    for inputs, targets in partial:
        yield torch.tensor([inputs], dtype=torch.long), torch.tensor([targets], dtype=torch.long)


def evaluate_text(
    model: GPT,
    tokenizer: Tokenizer,
    documents: Iterable[str],
    *,
    device: torch.device,
    batch_size: int = 8,
    fast_logits: FastLogits | None = None,
) -> EvaluationResult:
    """Evaluate on whole documents: each is encoded and followed by EOS, and the stream is scored in
    non-overlapping context-length windows. Bits per byte use the UTF-8 size of the documents."""
    token_ids: list[int] = [tokenizer.eos_id]  # the first token is predicted from a document start
    total_bytes = 0
    for document in documents:
        token_ids.extend(tokenizer.encode(document))
        token_ids.append(tokenizer.eos_id)
        total_bytes += len(document.encode("utf-8"))
    batches = text_windows(token_ids, model.config.context_length, batch_size)
    return evaluate_batches(
        model, batches, device=device, total_bytes=total_bytes, fast_logits=fast_logits
    )
