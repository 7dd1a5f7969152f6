"""The OpenAI wire format, as plain functions: a request's fields checked and turned into
generation requests (`prepare`), and the JSON of responses, stream chunks, choices and usage.

No FastAPI here: the routes in `app.py` call these and send what they return. Errors a caller
made raise `APIError`, which the app answers as `{"error": {...}}` with its status.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from scratchlm.errors import ScratchLMError
from scratchlm.inference.batch import GenerationRequest, TokenLogprob
from scratchlm.inference.decode import fit_prompt
from scratchlm.inference.settings import SamplingError, SamplingSettings
from scratchlm.inference.streaming import IncrementalDecoder, StopStringFilter
from scratchlm.server.schemas import GenerationFields
from scratchlm.tokenizer import Tokenizer


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.error_type, self.param, self.code = error_type, param, code


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


# --- requests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What the served model and the server's flags allow a request."""

    context_length: int
    max_tokens_limit: int  # the largest max_tokens a request may ask for
    vocab_size: int  # ids a logit_bias may name: both a logit and a piece of text


@dataclass
class Prepared:
    prompts: list[list[int]]
    # Prompt-major: prompt i's choice j is requests[i * n + j] (OpenAI's choice index).
    requests: list[GenerationRequest]
    stop_strings: list[str]
    n: int = 1
    echo: bool = False
    logprobs: int | None = None  # top-N per position, or None for no log-probabilities

    @property
    def prompt_ids(self) -> list[int]:
        return self.prompts[0]

    def prompt_of(self, index: int) -> list[int]:
        """The prompt of choice `index`."""
        return self.prompts[index // self.n]


def prepare(
    body: GenerationFields,
    prompts: list[list[int]],
    stop_ids: frozenset[int],
    max_tokens: int | None,
    limits: Limits,
    *,
    prompt_param: str,
    max_tokens_param: str = "max_tokens",
) -> Prepared:
    """Check a request against the limits and turn it into one GenerationRequest per prompt and
    choice (prompt-major)."""
    context_length = limits.context_length
    for number, prompt_ids in enumerate(prompts):
        try:
            fit_prompt(prompt_ids, context_length, truncate=False)
        except ScratchLMError as error:
            which = f"prompt {number} is" if len(prompts) > 1 else "the prompt is"
            raise APIError(
                400,
                f"{which} {len(prompt_ids)} tokens but the model's context is "
                f"{context_length} tokens (with room for at least one new token); shorten it to "
                f"at most {context_length - 1} tokens",
                param=prompt_param,
                code="context_length_exceeded",
            ) from error
    logprobs = body.logprob_count()
    echo = body.echoes
    if max_tokens == 0 and not echo:
        raise APIError(
            400,
            f"{max_tokens_param} must be at least 1 (0 is allowed only with echo, to score a "
            "prompt)",
            param=max_tokens_param,
            code="invalid_value",
        )
    top_logprobs = getattr(body, "top_logprobs", None)
    if top_logprobs and logprobs is None:
        raise APIError(
            400,
            "top_logprobs needs logprobs set to true",
            param="top_logprobs",
            code="invalid_value",
        )
    if max_tokens is not None and max_tokens > limits.max_tokens_limit:
        raise APIError(
            400,
            f"{max_tokens_param} is {max_tokens} but this server allows at most "
            f"{limits.max_tokens_limit}",
            param=max_tokens_param,
            code="invalid_value",
        )
    unsupported = body.unsupported()
    if unsupported is not None:
        raise APIError(400, unsupported[1], param=unsupported[0], code="unsupported_parameter")
    logit_bias = body.bias_pairs()
    for token, _ in logit_bias:
        if token >= limits.vocab_size:
            raise APIError(
                400,
                f"logit_bias names token {token}, but the vocabulary has {limits.vocab_size} "
                f"tokens (ids 0..{limits.vocab_size - 1})",
                param="logit_bias",
                code="invalid_value",
            )
    try:
        sampling = SamplingSettings(
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            min_p=body.min_p,
            repetition_penalty=body.repetition_penalty,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
        )
    except SamplingError as error:
        raise APIError(400, error.for_request(), param=error.field, code="invalid_value") from error
    # Generation also stops when the context is full (finish_reason "length").
    new_tokens = max_tokens if max_tokens is not None else limits.max_tokens_limit
    # n choices must differ, and the same seed must give the same n choices: choice i uses
    # seed + i, which stays within what a torch.Generator takes (seed < 2^63, n <= 64).
    requests = [
        GenerationRequest(
            prompt_ids,
            max_new_tokens=new_tokens,
            sampling=sampling,
            seed=None if body.seed is None else body.seed + index,
            stop_ids=stop_ids,
            logit_bias=logit_bias,
            logprobs=logprobs,
            prompt_logprobs=echo and logprobs is not None,
        )
        for prompt_ids in prompts
        for index in range(body.n)
    ]
    return Prepared(prompts, requests, body.stop_strings(), body.n, echo, logprobs)


# --- responses ------------------------------------------------------------------------------------


class ChoiceText:
    """Token ids of one choice -> text deltas: valid UTF-8, cut at the first stop string (the same
    pipeline as `TextStream`, driven by events instead of an iterator)."""

    def __init__(self, tokenizer: Tokenizer, stop_strings: list[str]) -> None:
        self.decoder = IncrementalDecoder(tokenizer)
        self.filter = StopStringFilter(stop_strings)
        self.tokens = 0
        self.finish_reason: str | None = None
        self.logprobs: list[TokenLogprob] = []  # of the tokens fed, when asked for
        self.prompt_logprobs: list[TokenLogprob] = []

    def feed(self, tokens: list[int], logprobs: list[TokenLogprob] | None = None) -> str:
        if logprobs:
            self.logprobs.extend(logprobs)
        pieces = []
        for token in tokens:
            self.tokens += 1
            pieces.append(self.filter.push(self.decoder.push(token)))
            if self.filter.stopped:
                self.finish_reason = "stop"
                break
        del self.logprobs[self.tokens :]  # tokens after a stop string are not part of the answer
        return "".join(pieces)

    def finish(self, reason: str) -> str:
        tail = self.filter.push(self.decoder.flush()) + self.filter.flush()
        self.finish_reason = "stop" if self.filter.stopped else reason
        return tail


def response_base(model_name: str, *, chat: bool) -> dict[str, Any]:
    """The fields every response and chunk of one request share: id, created, model."""
    identifier = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    return {"id": identifier, "created": int(time.time()), "model": model_name}


def usage(prepared: Prepared, choices: list[ChoiceText]) -> dict[str, int]:
    completion = sum(choice.tokens for choice in choices)
    prompt = sum(len(prompt_ids) for prompt_ids in prepared.prompts)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_choice(
    index: int,
    text: str,
    finish_reason: str | None,
    *,
    chat: bool,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One choice of a whole (non-streamed) response."""
    if chat:
        return {
            "index": index,
            "message": {"role": "assistant", "content": text},
            "logprobs": logprobs,
            "finish_reason": finish_reason,
        }
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def token_text(tokenizer: Tokenizer, token: int) -> str:
    """One token's own text (a piece of a multi-byte character decodes to U+FFFD)."""
    if not 0 <= token < tokenizer.vocab_size:
        return f"<|token {token}|>"  # a padding id of the model's vocabulary: never text
    return tokenizer.decode([token])


def completion_logprobs(
    tokenizer: Tokenizer,
    prompt_ids: list[int] | None,
    prompt_logprobs: list[TokenLogprob],
    generated: list[TokenLogprob],
    start_offset: int,
) -> dict[str, Any]:
    """The legacy completions `logprobs` object: tokens, token_logprobs, top_logprobs (a
    {token text: logprob} per position) and text_offset. With `prompt_ids` (echo) the prompt's
    tokens come first, the first of them with null logprobs (nothing precedes it)."""
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    offset = start_offset

    def add(token: int, value: float | None, top: dict[str, float] | None) -> None:
        nonlocal offset
        text = token_text(tokenizer, token)
        tokens.append(text)
        values.append(value)
        tops.append(top)
        offsets.append(offset)
        offset += len(text)

    entries = list(generated)
    if prompt_ids is not None:
        add(prompt_ids[0], None, None)
        entries = list(prompt_logprobs) + entries
    for entry in entries:
        top: dict[str, float] = {}
        for token, value in entry.top:  # best first: two tokens with one text keep the better
            top.setdefault(token_text(tokenizer, token), value)
        add(entry.token, entry.logprob, top)
    return {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def chat_logprobs(tokenizer: Tokenizer, generated: list[TokenLogprob]) -> dict[str, Any]:
    """The chat `logprobs` object: {"content": [{token, logprob, bytes, top_logprobs}]}."""

    def item(token: int, value: float) -> dict[str, Any]:
        text = token_text(tokenizer, token)
        return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}

    return {
        "content": [
            {
                **item(entry.token, entry.logprob),
                "top_logprobs": [item(token, value) for token, value in entry.top],
            }
            for entry in generated
        ],
        "refusal": None,
    }


def completion_response(
    base: dict[str, Any], choices: list[dict[str, Any]], usage: dict[str, int], *, chat: bool
) -> dict[str, Any]:
    return {
        **base,
        "object": "chat.completion" if chat else "text_completion",
        "choices": choices,
        "usage": usage,
    }


def chunk_object(*, chat: bool) -> str:
    return "chat.completion.chunk" if chat else "text_completion"


def stream_chunk(
    base: dict[str, Any],
    index: int,
    text: str | None,
    finish: str | None,
    *,
    chat: bool,
    include_usage: bool,
    role: bool = False,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One streamed delta of one choice (a chat chunk's first names the role); `logprobs` are
    those of the delta's tokens (legacy or chat format)."""
    choice: dict[str, Any] = {"index": index, "logprobs": logprobs, "finish_reason": finish}
    if chat:
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    payload: dict[str, Any] = {**base, "object": chunk_object(chat=chat), "choices": [choice]}
    if include_usage:
        payload["usage"] = None
    return payload


def usage_chunk(base: dict[str, Any], usage: dict[str, int], *, chat: bool) -> dict[str, Any]:
    """The last chunk of a stream with `stream_options.include_usage`: no choices, the usage."""
    return {**base, "object": chunk_object(chat=chat), "choices": [], "usage": usage}


def server_sent_event(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n"
