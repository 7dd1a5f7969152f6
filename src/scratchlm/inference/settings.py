"""What a front end asks the sampler for: `SamplingSettings` (validated on construction) and the
generation defaults every command and the Python API share. Free of torch, so that `--help` and
`import scratchlm` stay fast; the sampling itself is in `sampling.py`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from scratchlm.errors import ScratchLMError

LOGIT_BIAS_LIMIT = 100.0  # OpenAI's range for a logit_bias value
MAX_NEW_TOKENS = 200  # tokens generated when a command or call does not say


class SamplingError(ScratchLMError):
    """A sampling setting out of its range; `field` names it (the server reports it as `param`)."""

    def __init__(self, field: str, requirement: str, value: object) -> None:
        self.field, self.requirement, self.value = field, requirement, value
        super().__init__(f"--{field.replace('_', '-')} {requirement}, got {value}")

    def for_request(self) -> str:
        """The message with the request field's name instead of the CLI flag."""
        return f"{self.field} {self.requirement}, got {self.value}"


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise SamplingError(name, "must be a finite number", value)
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not (math.isfinite(value) and -2.0 <= value <= 2.0):
                raise SamplingError(name, "must be in [-2, 2]", value)
        if self.temperature < 0:
            raise SamplingError("temperature", "must be >= 0 (0 = greedy)", self.temperature)
        if self.top_k is not None and self.top_k < 1:
            raise SamplingError("top_k", "must be >= 1 (or omitted)", self.top_k)
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise SamplingError("top_p", "must be in (0, 1]", self.top_p)
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            raise SamplingError("min_p", "must be in [0, 1]", self.min_p)
        if self.repetition_penalty <= 0:
            raise SamplingError(
                "repetition_penalty", "must be > 0 (1 = off)", self.repetition_penalty
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def uses_history(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )


GREEDY = SamplingSettings(temperature=0.0, top_k=None)

# (token id, bias) pairs added to those tokens' logits before anything else (OpenAI's logit_bias).
LogitBias = tuple[tuple[int, float], ...]


def check_logit_bias(logit_bias: LogitBias) -> None:
    """Token ids >= 0 and finite biases in [-100, 100] (the vocabulary bound is the sampler's)."""
    for token, bias in logit_bias:
        if token < 0:
            raise SamplingError("logit_bias", "token ids must be >= 0", token)
        if not (math.isfinite(bias) and -LOGIT_BIAS_LIMIT <= bias <= LOGIT_BIAS_LIMIT):
            raise SamplingError("logit_bias", "values must be in [-100, 100]", bias)


# torch.Generator.manual_seed takes [-2^63, 2^64 - 1]; anything else is a RuntimeError.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


def generation_defaults() -> dict[str, Any]:
    """The one set of defaults: sampling knobs (SamplingSettings' own), max_new_tokens and seed.
    Commands state only where they differ (chat, eval); the server follows OpenAI's instead."""
    fields = {field.name: field.default for field in dataclasses.fields(SamplingSettings)}
    return {**fields, "max_new_tokens": MAX_NEW_TOKENS, "seed": None}
