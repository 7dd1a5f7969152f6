"""The FastAPI application: OpenAI-compatible routes over a continuous-batching `Scheduler`.

Every error, ours or the framework's, leaves as `{"error": {"message", "type", "param", "code"}}`
with a 4xx status for caller mistakes, so OpenAI clients raise their usual exceptions.

Around the routes, outermost first: `HostCheckMiddleware` (a keyless server answers only loopback
Host names: a web page cannot reach it by DNS rebinding), `BodyLimitMiddleware` (size and read
time of the body), CORS when asked for. Every body is checked for text that is not valid Unicode
once, before any field is read (`require_valid_unicode`).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import re
import time
from collections.abc import AsyncIterator, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from scratchlm.chat_template import Message, end_of_turn_id, render
from scratchlm.errors import ScratchLMError
from scratchlm.inference.batch import TokenLogprob
from scratchlm.model import GPT
from scratchlm.server.metrics import Metrics
from scratchlm.server.openai import (
    APIError,
    ChoiceText,
    Limits,
    Prepared,
    chat_logprobs,
    completion_choice,
    completion_logprobs,
    completion_response,
    error_body,
    prepare,
    response_base,
    server_sent_event,
    stream_chunk,
    usage,
    usage_chunk,
)
from scratchlm.server.scheduler import (
    DoneEvent,
    ErrorEvent,
    Event,
    Job,
    QueueFull,
    Scheduler,
    TokensEvent,
)
from scratchlm.server.schemas import ChatCompletionRequest, CompletionRequest, GenerationFields
from scratchlm.tokenizer import Tokenizer

STATIC_DIR = Path(__file__).resolve().parent / "static"
# How often a non-streaming request checks whether its client is still there.
DISCONNECT_POLL_SECONDS = 0.5
PLACEHOLDER_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>scratchlm</title></head><body>"
    "<h1>scratchlm server</h1><p>The OpenAI-compatible API is at <code>/v1</code>.</p>"
    "</body></html>"
)
# Host names that only reach this machine: a DNS-rebinding page sends its own name instead.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class ServerSettings:
    model_name: str
    api_key: str | None = None
    max_batch: int = 8
    max_queue: int = 64
    max_tokens_limit: int | None = None  # None: the model's context length
    cors_origins: list[str] = field(default_factory=list)
    max_body_bytes: int = 1_000_000
    prefill_chunk: int = 256
    # Host names answered besides loopback ("*": any). None: loopback only without a key, any
    # with one.
    allowed_hosts: list[str] | None = None
    header_timeout: float = 10.0  # seconds for a request's line and headers (see protocol.py)
    body_timeout: float = 30.0  # seconds for a request's whole body, then 408
    keep_alive_timeout: int = 5  # seconds an idle kept-alive connection stays open
    max_connections: int = 256  # open connections (and requests) at once; beyond: 503


class GenerationFailed(Exception):
    """A row ended with an error inside the model (not the caller's fault)."""


def host_name(header: str) -> str:
    """A Host header's name, lower case, without port or trailing dot: '[::1]:8000' -> '::1'."""
    name = header.strip().lower()
    if name.startswith("["):  # an IPv6 literal, with or without a port after the bracket
        end = name.find("]")
        name = name[1:end] if end > 0 else name
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return name.rstrip(".")


def allowed_host_names(settings: ServerSettings) -> frozenset[str] | None:
    """The Host names the server answers; None for any."""
    if settings.allowed_hosts is None:
        # A key protects the routes whatever name a client uses; without one, only a name that
        # cannot be rebound to another address proves the caller meant this machine.
        return None if settings.api_key else LOOPBACK_HOSTS
    names = {host_name(name) for name in settings.allowed_hosts}
    return None if "*" in names else LOOPBACK_HOSTS | names


class HostCheckMiddleware:
    """Answer 403 to requests whose Host header is not an allowed name (DNS-rebinding defence,
    as Jupyter and llama.cpp do). A request without a Host header (HTTP/1.0) passes: browsers
    always send one."""

    def __init__(self, app: Any, allowed: frozenset[str] | None, metrics: Metrics) -> None:
        self.app, self.allowed, self.metrics = app, allowed, metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if self.allowed is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"host")
        if header is None or self.allows(host_name(header.decode("latin-1"))):
            await self.app(scope, receive, send)
            return
        self.metrics.count_error(403)
        shown = header.decode("latin-1")[:100]
        response = JSONResponse(
            error_body(
                f"the Host header {shown!r} is not allowed: this server answers only "
                f"{', '.join(sorted(self.allowed))} (a defence against DNS rebinding); to serve "
                "it under another name, start it with --allowed-host NAME or with --api-key",
                "invalid_request_error",
                code="host_not_allowed",
            ),
            status_code=403,
        )
        await response(scope, receive, send)

    def allows(self, name: str) -> bool:
        assert self.allowed is not None
        if name in self.allowed:
            return True
        try:  # any loopback address (127.0.0.2...): an IP literal cannot be rebound
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False


class BodyLimitMiddleware:
    """Refuse request bodies over the limit with 413, whether or not Content-Length is sent
    (chunked bodies are counted as they arrive), before any of it reaches JSON parsing; a body
    that has not all arrived within `timeout` seconds gets 408 and the connection is closed
    (a client trickling bytes must not hold a connection forever)."""

    def __init__(self, app: Any, limit: int, metrics: Metrics, timeout: float = 30.0) -> None:
        self.app, self.limit, self.metrics, self.timeout = app, limit, metrics, timeout

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        total = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:  # (not the builtin TimeoutError before Python 3.11)
                await self._too_slow(scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # later calls watch for the client disconnecting

        await self.app(scope, replay, send)

    async def _too_slow(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        message = f"the request body did not arrive within {self.timeout:g} s; send it at once"
        await self._answer(408, message, "request_timeout", scope, receive, send)

    async def _refuse(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        message = f"the request body is over the {self.limit}-byte limit; send a smaller request"
        await self._answer(413, message, "request_too_large", scope, receive, send)

    async def _answer(
        self,
        status: int,
        message: str,
        code: str,
        scope: MutableMapping[str, Any],
        receive: Any,
        send: Any,
    ) -> None:
        self.metrics.count_error(status)
        response = JSONResponse(
            error_body(message, "invalid_request_error", code=code),
            status_code=status,
            headers={"Connection": "close"},  # the rest of the body is never read
        )
        await response(scope, receive, send)


# Pydantic names the member of a union it tried in an error's location ("prompt", "str"): not a
# field, so not part of the `param` a client sees.
UNION_MEMBER = re.compile(r"str|int|float|bool|none|[a-z-]+\[.*\]")


def field_path(location: Sequence[Any]) -> list[str]:
    """A validation error's location without "body" and union members: ["messages", "0"]."""
    return [
        str(part)
        for part in location
        if part != "body" and not (isinstance(part, str) and UNION_MEMBER.fullmatch(part))
    ]


def invalid_text_path(value: Any) -> str | None:
    """The dotted path ("messages.0.content") of the first string in parsed JSON that is not
    valid Unicode (a lone surrogate; for a key, the object's path), "" for the top level, or None
    when all text is valid.
    Iterative: a deeply nested body must not exhaust the stack."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not valid_text(item):
                return path
            continue
        if isinstance(item, dict):
            children: list[tuple[Any, str]] = []
            for key, child in item.items():
                if not valid_text(key):
                    return path  # a key: the object that holds it
                children.append((child, f"{path}.{key}" if path else key))
        elif isinstance(item, list):
            children = [
                (child, f"{path}.{index}" if path else str(index))
                for index, child in enumerate(item)
            ]
        else:
            continue
        stack.extend(reversed(children))  # popped in document order: the first bad one is named
    return None


def valid_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def create_app(model: GPT, tokenizer: Tokenizer, settings: ServerSettings) -> FastAPI:
    model.eval()
    context_length = model.config.context_length
    limits = Limits(
        context_length=context_length,
        max_tokens_limit=settings.max_tokens_limit or context_length,
        # Ids a logit_bias may name: both a logit and a piece of text.
        vocab_size=min(model.config.vocab_size, tokenizer.vocab_size),
    )
    metrics = Metrics()
    scheduler = Scheduler(
        model,
        max_batch=settings.max_batch,
        max_queue=settings.max_queue,
        metrics=metrics,
        prefill_chunk=settings.prefill_chunk,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        yield
        scheduler.stop()

    # No /docs, /redoc or /openapi.json: the schema would be public even with --api-key set.
    app = FastAPI(
        title="scratchlm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.scheduler = scheduler
    app.state.metrics = metrics
    app.state.settings = settings
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_body_bytes,
        metrics=metrics,
        timeout=settings.body_timeout,
    )
    # Added last: the outermost, so a refused Host never gets further.
    app.add_middleware(HostCheckMiddleware, allowed=allowed_host_names(settings), metrics=metrics)

    # --- errors ---------------------------------------------------------------------------
    def error_response(
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> JSONResponse:
        metrics.count_error(status)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(
            error_body(message, error_type, param, code), status_code=status, headers=headers
        )

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error_response(
            error.status, error.message, error.error_type, error.param, error.code
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        first = problems[0] if problems else {}
        location = field_path(first.get("loc", ()))
        param = ".".join(location) or None
        if first.get("type") == "json_invalid":
            message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}"
        elif not location and first.get("type") in ("model_attributes_type", "dict_type"):
            message = "the request body must be a JSON object"
        else:
            message = "; ".join(
                f"{'.'.join(field_path(problem.get('loc', ())))}: "
                f"{problem.get('msg', 'invalid').removeprefix('Value error, ')}"
                for problem in problems
            )
        return error_response(400, message, param=param, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and error.detail == "There was an error parsing the body":
            # FastAPI's words for a body json.loads refused outright: bytes that are not UTF-8,
            # an integer of over 4300 digits, nesting deeper than Python's recursion limit.
            return error_response(
                400,
                "the request body could not be read as JSON: send UTF-8 text holding one JSON "
                "object (integers of at most 4300 digits, nesting a few hundred levels deep)",
                code="invalid_json",
            )
        return error_response(error.status_code, str(error.detail), code=None)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {error}", "server_error")

    # --- authentication -------------------------------------------------------------------
    async def require_key(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), settings.api_key.encode()
        ):
            raise APIError(
                401,
                "missing or wrong API key; send 'Authorization: Bearer <key>'",
                param=None,
                code="invalid_api_key",
            )

    async def require_valid_unicode(request: Request) -> None:
        """Refuse a JSON body holding a lone surrogate ("\\ud800") anywhere, keys included: no
        tokenizer or response encoder can take it. One check for every field, known or not."""
        try:
            body = await request.json()  # parsed (and cached) already for a JSON body
        except Exception:
            return  # not JSON: the body's own validation says so
        path = invalid_text_path(body)
        if path is not None:
            raise APIError(
                400,
                f"{path or 'the request body'} is not valid Unicode text: it holds a lone "
                "surrogate (an unpaired \\ud800-\\udfff escape or its bytes), which UTF-8 "
                "cannot encode; send valid text",
                param=path or None,
                code="invalid_unicode",
            )

    # --- plain routes ---------------------------------------------------------------------
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": settings.model_name,
            "batch_size": scheduler.decoder.active,
            "queue_depth": len(scheduler.waiting),
        }

    @app.get("/metrics", dependencies=[Depends(require_key)])
    async def metrics_text() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=[Depends(require_key)])
    async def models() -> dict[str, Any]:
        metrics.count_request("models")
        return {
            "object": "list",
            "data": [
                {
                    "id": settings.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "scratchlm",
                    "context_length": context_length,
                }
            ],
        }

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return FileResponse(page)
        return HTMLResponse(PLACEHOLDER_PAGE)

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # --- generation -----------------------------------------------------------------------
    def submit(prepared: Prepared, streaming: bool) -> tuple[list[Job], asyncio.Queue[Event]]:
        try:
            return scheduler.submit(prepared.requests, streaming=streaming)
        except QueueFull as error:
            raise APIError(429, str(error), error_type="server_busy", code="queue_full") from error

    async def choice_events(
        request: Request,
        prepared: Prepared,
        jobs: list[Job],
        events: asyncio.Queue[Event],
        choices: list[ChoiceText],
        started: float,
        poll_disconnect: bool,
    ) -> AsyncIterator[tuple[int, str, str | None, list[TokenLogprob]]]:
        """(choice index, text delta, finish reason or None, the log-probabilities of the tokens
        behind the delta when asked for) until every choice has finished; frees every unfinished
        row when the caller stops listening (disconnect or error)."""
        unfinished = set(range(len(jobs)))
        first_token_seen = False
        try:
            while unfinished:
                if poll_disconnect:
                    try:
                        event = await asyncio.wait_for(events.get(), DISCONNECT_POLL_SECONDS)
                    except asyncio.TimeoutError:  # (not the builtin before Python 3.11)
                        if await request.is_disconnected():
                            return
                        continue
                else:
                    event = await events.get()
                index = event.index
                if index not in unfinished:
                    continue  # a row already ended by a stop string
                choice = choices[index]
                if isinstance(event, ErrorEvent):
                    raise GenerationFailed(event.message)
                if isinstance(event, TokensEvent):
                    if not first_token_seen:
                        first_token_seen = True
                        metrics.observe_first_token(time.monotonic() - started)
                    if event.prompt_logprobs:
                        choice.prompt_logprobs = event.prompt_logprobs
                    before = len(choice.logprobs)
                    text = choice.feed(event.tokens, event.logprobs)
                    new_logprobs = choice.logprobs[before:]
                    if choice.finish_reason is not None:  # a stop string: free the row now
                        unfinished.discard(index)
                        scheduler.cancel([jobs[index]])
                        yield index, text, choice.finish_reason, new_logprobs
                    elif text or new_logprobs:
                        yield index, text, None, new_logprobs
                    else:  # nothing to send yet (text held back): the scheduler need not wait
                        jobs[index].first_handled.set()
                elif isinstance(event, DoneEvent):
                    unfinished.discard(index)
                    if event.prompt_logprobs:
                        choice.prompt_logprobs = event.prompt_logprobs
                    tail = choice.finish(event.finish_reason)
                    yield index, tail, choice.finish_reason, []
        finally:
            if unfinished:
                scheduler.cancel([jobs[index] for index in unfinished])

    def choice_logprobs(
        prepared: Prepared, index: int, choice: ChoiceText, prompt_text: str, chat: bool
    ) -> dict[str, Any] | None:
        if prepared.logprobs is None:
            return None
        if chat:
            return chat_logprobs(tokenizer, choice.logprobs)
        if prepared.echo:
            return completion_logprobs(
                tokenizer, prepared.prompt_of(index), choice.prompt_logprobs, choice.logprobs, 0
            )
        return completion_logprobs(tokenizer, None, [], choice.logprobs, len(prompt_text))

    async def respond(
        request: Request,
        body: GenerationFields,
        prepared: Prepared,
        chat: bool,
        prompt_texts: list[str] | None = None,
    ) -> Response:
        started = time.monotonic()
        jobs, events = submit(prepared, streaming=body.stream)
        choices = [ChoiceText(tokenizer, prepared.stop_strings) for _ in jobs]
        base = response_base(settings.model_name, chat=chat)
        if not body.stream:
            texts = [""] * len(jobs)
            try:
                async for index, text, _, _ in choice_events(
                    request, prepared, jobs, events, choices, started, poll_disconnect=True
                ):
                    texts[index] += text
            except GenerationFailed as error:
                raise APIError(500, str(error), error_type="server_error") from error
            if await request.is_disconnected():
                return Response(status_code=499)
            result = []
            for index, choice in enumerate(choices):
                prompt_text = prompt_texts[index // prepared.n] if prompt_texts else ""
                text = prompt_text + texts[index] if prepared.echo else texts[index]
                logprobs = choice_logprobs(prepared, index, choice, prompt_text, chat)
                result.append(
                    completion_choice(
                        index, text, choice.finish_reason, chat=chat, logprobs=logprobs
                    )
                )
            return JSONResponse(
                completion_response(base, result, usage(prepared, choices), chat=chat)
            )

        include_usage = body.include_usage

        def chunk(
            index: int,
            text: str | None,
            finish: str | None,
            role: bool = False,
            logprobs: dict[str, Any] | None = None,
        ) -> str:
            return server_sent_event(
                stream_chunk(
                    base,
                    index,
                    text,
                    finish,
                    chat=chat,
                    include_usage=include_usage,
                    role=role,
                    logprobs=logprobs,
                )
            )

        # Where each completion choice's next token starts in its text (the legacy text_offset).
        texts_before = [
            prompt_texts[index // prepared.n] if prompt_texts else "" for index in range(len(jobs))
        ]
        offsets = [0 if prepared.echo else len(text) for text in texts_before]

        def delta_logprobs(
            index: int, entries: list[TokenLogprob], prompt_ids: list[int] | None = None
        ) -> dict[str, Any] | None:
            if prepared.logprobs is None:
                return None
            if chat:
                return chat_logprobs(tokenizer, entries)
            prompt_entries = choices[index].prompt_logprobs if prompt_ids is not None else []
            result = completion_logprobs(
                tokenizer, prompt_ids, prompt_entries, entries, offsets[index]
            )
            if result["tokens"]:
                offsets[index] = result["text_offset"][-1] + len(result["tokens"][-1])
            return result

        async def stream() -> AsyncIterator[str]:
            if chat:
                for index in range(len(jobs)):
                    yield chunk(index, "", None, role=True)
            echoed: set[int] = set()
            try:
                async for index, text, finish, new_logprobs in choice_events(
                    request, prepared, jobs, events, choices, started, poll_disconnect=False
                ):
                    if prepared.echo and index not in echoed:
                        # The prompt first (its log-probabilities come with the row's first
                        # event).
                        echoed.add(index)
                        prompt_logprobs = delta_logprobs(index, [], prepared.prompt_of(index))
                        yield chunk(index, texts_before[index], None, logprobs=prompt_logprobs)
                    if text or new_logprobs:
                        yield chunk(index, text, None, logprobs=delta_logprobs(index, new_logprobs))
                    if finish is not None:
                        yield chunk(index, None if chat else "", finish)
                    # Resumed here, the chunks above have been sent: the scheduler may start
                    # its next step (it waits for a row's first ones, FIRST_DELIVERY_WAIT_S).
                    jobs[index].first_handled.set()
            except GenerationFailed as error:
                metrics.count_error(500)
                yield server_sent_event(error_body(str(error), "server_error"))
                return
            if include_usage:
                yield server_sent_event(usage_chunk(base, usage(prepared, choices), chat=chat))
            yield server_sent_event("[DONE]")

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            # Proxies must pass events through as they come.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    generation_checks = [Depends(require_key), Depends(require_valid_unicode)]

    @app.post("/v1/completions", dependencies=generation_checks)
    async def completions(request: Request, body: CompletionRequest) -> Response:
        metrics.count_request("completions")
        # One prompt (text or token ids) or a list of them.
        given: list[str | list[int]]
        prompt = body.prompt
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            given = [prompt]
        elif not prompt:
            given = [[]]  # reported below as an empty token list
        else:
            given = list(prompt)  # type: ignore[arg-type]
        prompts: list[list[int]] = []
        prompt_texts: list[str] = []
        for number, item in enumerate(given):
            param = "prompt" if len(given) == 1 else f"prompt.{number}"
            if isinstance(item, str):
                # An empty prompt starts a document, as `scratchlm generate` does.
                prompts.append(tokenizer.encode(item) if item else [tokenizer.eos_id])
                prompt_texts.append(item)
                continue
            prompt_ids = list(item)
            if not prompt_ids:
                raise APIError(400, "the prompt token list is empty", param=param)
            if any(not 0 <= token < tokenizer.vocab_size for token in prompt_ids):
                raise APIError(
                    400,
                    f"prompt token ids must be in [0, {tokenizer.vocab_size})",
                    param=param,
                )
            prompts.append(prompt_ids)
            prompt_texts.append(tokenizer.decode(prompt_ids))
        prepared = prepare(
            body,
            prompts,
            frozenset({tokenizer.eos_id}),
            body.max_tokens,
            limits,
            prompt_param="prompt",
        )
        return await respond(request, body, prepared, chat=False, prompt_texts=prompt_texts)

    @app.post("/v1/chat/completions", dependencies=generation_checks)
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
        metrics.count_request("chat_completions")
        messages: list[Message] = [
            # "developer" is the newer OpenAI name for the system role.
            {
                "role": "system" if message.role == "developer" else message.role,
                "content": message.text(),
            }
            for message in body.messages
        ]
        try:
            prompt_ids, _ = render(messages, tokenizer, add_generation_prompt=True)
        except ScratchLMError as error:
            raise APIError(400, str(error), param="messages") from error
        stop_ids = frozenset({end_of_turn_id(tokenizer), tokenizer.eos_id})
        max_tokens: int | None = body.max_tokens
        max_tokens_param = "max_tokens"
        if body.max_completion_tokens is not None:
            max_tokens, max_tokens_param = body.max_completion_tokens, "max_completion_tokens"
        prepared = prepare(
            body,
            [prompt_ids],
            stop_ids,
            max_tokens,
            limits,
            prompt_param="messages",
            max_tokens_param=max_tokens_param,
        )
        return await respond(request, body, prepared, chat=True)

    return app
