"""Request bodies of the OpenAI-compatible endpoints.

Known fields are type- and range-checked (the ranges are OpenAI's where it has one; NaN and
infinity are refused everywhere), and a violation is a 400 in the OpenAI error shape naming the
field. Unknown fields are ignored (clients send many that change nothing, such as `user` or
`metadata`), except the OpenAI fields that would change the answer and that this server does not
implement (`tools`, `response_format` json, `best_of`...): those are refused with a 400 unless they
ask for nothing (`UNSUPPORTED`), never silently dropped. `echo`, `logprobs` (completions: 0..5) and
`logprobs` / `top_logprobs` (chat: a boolean and 0..20) are implemented.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from scratchlm.inference.settings import LOGIT_BIAS_LIMIT

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # OpenAI's seed is a signed 64-bit integer
MAX_STOP_STRINGS = 4  # as OpenAI
MAX_COMPLETION_LOGPROBS = 5  # the legacy completions API's top-N limit (OpenAI's)
MAX_CHAT_TOP_LOGPROBS = 20  # the chat API's top_logprobs limit (OpenAI's)
MAX_CHOICES = 64  # n; OpenAI allows 128, but n rows share one queue (--max-queue 64 by default)
TOKEN_ID = re.compile(r"[0-9]{1,10}")  # a logit_bias key: ASCII digits only (int() takes others)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


def is_harmless(value: Any, harmless: tuple[Any, ...]) -> bool:
    """True when `value` is None or one of `harmless`, compared with its type (so `1` is not
    `True` and `0` is not `False`)."""
    return value is None or any(
        type(value) is type(allowed) and value == allowed for allowed in harmless
    )


class GenerationFields(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str | None = None
    # 0 only with a completion's echo (scoring a prompt); `prepare` refuses it otherwise.
    max_tokens: int | None = Field(default=None, ge=0)
    # OpenAI defaults (not the CLI's): temperature 1, no top-k, no nucleus.
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    # {"token id": bias in [-100, 100]}, added to that token's logit before sampling (OpenAI's).
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    # field -> (values that ask for nothing, what it would need): anything else is refused.
    UNSUPPORTED: ClassVar[dict[str, tuple[tuple[Any, ...], str]]] = {}

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        strings = [stop] if isinstance(stop, str) else list(stop or [])
        if len(strings) > MAX_STOP_STRINGS:
            raise ValueError(
                f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(strings)}"
            )
        if any(not text for text in strings):
            raise ValueError("stop strings must not be empty")
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for key, value in (bias or {}).items():
            if not TOKEN_ID.fullmatch(key):
                raise ValueError(
                    f'keys must be token ids written as strings of digits, like "50256"; got '
                    f"{key[:40]!r}"
                )
            if not -LOGIT_BIAS_LIMIT <= value <= LOGIT_BIAS_LIMIT:
                raise ValueError(f"values must be in [-100, 100]; token {key} has {value}")
        return bias

    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def bias_pairs(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(key), value) for key, value in (self.logit_bias or {}).items())

    def unsupported(self) -> tuple[str, str] | None:
        """(field, message) for the first field that asks for something this server does not
        do, or None."""
        for name, (harmless, reason) in self.UNSUPPORTED.items():
            if not is_harmless(getattr(self, name), harmless):
                allowed = " or ".join(json.dumps(value) for value in harmless)
                hint = f"leave it out (or set it to {allowed})" if allowed else "leave it out"
                return name, (
                    f"Unsupported parameter: '{name}' is not supported by this server "
                    f"({reason}); {hint}"
                )
        return None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def logprob_count(self) -> int | None:
        """How many top tokens to report per position (0: the chosen one's only), or None when
        no log-probabilities are asked for."""
        return None

    @property
    def echoes(self) -> bool:
        return False


class CompletionRequest(GenerationFields):
    # Text, token ids, or a list of either (several prompts; what the OpenAI API also accepts).
    prompt: str | list[int] | list[str] | list[list[int]]
    echo: StrictBool | None = None
    # The legacy format: the top-N count (0..5); false or null for none.
    logprobs: StrictBool | StrictInt | None = None
    best_of: Any = None
    suffix: Any = None

    UNSUPPORTED: ClassVar[dict[str, tuple[tuple[Any, ...], str]]] = {
        **GenerationFields.UNSUPPORTED,
        "best_of": ((1,), "only the n choices asked for are generated"),
        "suffix": (("",), "no text is inserted before a suffix"),
    }

    @field_validator("logprobs")
    @classmethod
    def _check_logprobs(cls, value: bool | int | None) -> bool | int | None:
        if value is True or (
            not isinstance(value, bool)
            and isinstance(value, int)
            and not 0 <= value <= MAX_COMPLETION_LOGPROBS
        ):
            raise ValueError(
                f"must be an integer in [0, {MAX_COMPLETION_LOGPROBS}] (the number of top "
                f"tokens per position), or false/null for none; got {value!r}"
            )
        return value

    def logprob_count(self) -> int | None:
        if self.logprobs is None or isinstance(self.logprobs, bool):
            return None
        return self.logprobs

    @property
    def echoes(self) -> bool:
        return bool(self.echo)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(GenerationFields):
    messages: list[ChatMessage] = Field(min_length=1)
    # The newer name of max_tokens in the chat API.
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=MAX_CHAT_TOP_LOGPROBS)
    tools: Any = None
    functions: Any = None
    tool_choice: Any = None
    function_call: Any = None
    response_format: Any = None
    modalities: Any = None
    audio: Any = None
    web_search_options: Any = None

    UNSUPPORTED: ClassVar[dict[str, tuple[tuple[Any, ...], str]]] = {
        **GenerationFields.UNSUPPORTED,
        "tools": (([],), "the model cannot call tools"),
        "functions": (([],), "the model cannot call functions"),
        "tool_choice": (("none", "auto"), "the model cannot call tools"),
        "function_call": (("none", "auto"), "the model cannot call functions"),
        "response_format": (({"type": "text"},), "the output is free text, never forced JSON"),
        "modalities": ((["text"],), "the model writes text only"),
        "audio": ((), "the model writes text only"),
        "web_search_options": ((), "the model cannot search the web"),
    }

    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None
