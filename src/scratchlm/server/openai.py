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
from scratchlm.inference.batch import GenerationRequest
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
    prompt_ids: list[int]
    requests: list[GenerationRequest]
    stop_strings: list[str]


def prepare(
    body: GenerationFields,
    prompt_ids: list[int],
    stop_ids: frozenset[int],
    max_tokens: int | None,
    limits: Limits,
    *,
    prompt_param: str,
    max_tokens_param: str = "max_tokens",
) -> Prepared:
    """Check a request against the limits and turn it into one GenerationRequest per choice."""
    context_length = limits.context_length
    try:
        fit_prompt(prompt_ids, context_length, truncate=False)
    except ScratchLMError as error:
        raise APIError(
            400,
            f"the prompt is {len(prompt_ids)} tokens but the model's context is "
            f"{context_length} tokens (with room for at least one new token); shorten it to "
            f"at most {context_length - 1} tokens",
            param=prompt_param,
            code="context_length_exceeded",
        ) from error
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
        )
        for index in range(body.n)
    ]
    return Prepared(prompt_ids, requests, body.stop_strings())


# --- responses ------------------------------------------------------------------------------------


class ChoiceText:
    """Token ids of one choice -> text deltas: valid UTF-8, cut at the first stop string (the same
    pipeline as `TextStream`, driven by events instead of an iterator)."""

    def __init__(self, tokenizer: Tokenizer, stop_strings: list[str]) -> None:
        self.decoder = IncrementalDecoder(tokenizer)
        self.filter = StopStringFilter(stop_strings)
        self.tokens = 0
        self.finish_reason: str | None = None

    def feed(self, tokens: list[int]) -> str:
        pieces = []
        for token in tokens:
            self.tokens += 1
            pieces.append(self.filter.push(self.decoder.push(token)))
            if self.filter.stopped:
                self.finish_reason = "stop"
                break
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
    prompt = len(prepared.prompt_ids)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_choice(
    index: int, text: str, finish_reason: str | None, *, chat: bool
) -> dict[str, Any]:
    """One choice of a whole (non-streamed) response."""
    if chat:
        return {
            "index": index,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish_reason,
        }
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


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
) -> dict[str, Any]:
    """One streamed delta of one choice (a chat chunk's first names the role)."""
    choice: dict[str, Any] = {"index": index, "logprobs": None, "finish_reason": finish}
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
