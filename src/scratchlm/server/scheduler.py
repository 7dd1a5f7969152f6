"""Continuous batching: one thread owns the model and a `BatchDecoder`.

Requests become `Job`s (one per choice: `n > 1` is n independent rows). The thread loops: free the
rows of cancelled jobs, admit waiting jobs while the batch has room, run one `step()` (a decode
forward plus at most one prefill chunk), and hand each job its new tokens through its asyncio
queue. The HTTP side never touches the model, so a slow step never blocks the event loop, and a
full waiting queue is refused at once (HTTP 429) instead of piling up.

Failures stay as small as they can: a row whose own work fails (its sampling, its prefill) ends
alone with an `ErrorEvent` for its job while the other rows keep streaming; only a failure of the
shared decode forward fails the rows in it, and then a fresh decoder serves the next requests.
The load gauges are set after every step, so they read 0 again once the server is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from scratchlm.inference.batch import BatchDecoder, GenerationRequest, Row, TokenLogprob
from scratchlm.model import GPT
from scratchlm.server.metrics import Metrics

# After a step that produced a streaming row's first tokens, the scheduler waits up to this long
# for the HTTP side to send them before it starts the next step. The next step's kernels take
# every core, and the event loop thread that writes the event then waited for one: time to first
# token at one client (llama-42m fp32, 32-token prompt, 2 threads) was 31 ms when 64 tokens were
# asked for and 21 ms when one was, and 23 ms with this wait. Only while the batch is small: with
# many rows the event loop is busy with every row's events, a new row's first ones come late, and
# the waits cost the batch's throughput (fp32 at 32 clients measured 0.90x llama-server's, 1.10x
# without them).
FIRST_DELIVERY_WAIT_S = 0.003
FIRST_DELIVERY_WAIT_MAX_ROWS = 2

logger = logging.getLogger("scratchlm.server")


class QueueFull(Exception):
    """No room in the waiting queue for the request's rows."""


@dataclass
class TokensEvent:
    index: int
    tokens: list[int]
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per token when asked for
    # The prompt's log-probabilities (when asked for) come with a job's first event.
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class DoneEvent:
    index: int
    finish_reason: str
    # The prompt tokens' log-probabilities (from the second on) when the request asked for them.
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class ErrorEvent:
    index: int
    message: str


Event = TokensEvent | DoneEvent | ErrorEvent


@dataclass
class Job:
    """One row's worth of work and the queue its events go to (on the HTTP side's loop)."""

    index: int
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event]
    handle: int | None = None
    sent: int = 0  # tokens already handed over
    cancelled: bool = False
    submitted: float = field(default_factory=time.monotonic)
    streaming: bool = False  # the client reads events as they come (SSE)
    # Set by the HTTP side once it has handled this row's first event (sent it, when streaming).
    first_handled: threading.Event = field(default_factory=threading.Event)

    def emit(self, event: Event) -> None:
        # A closed loop means nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Scheduler:
    def __init__(
        self,
        model: GPT,
        *,
        max_batch: int,
        max_queue: int,
        metrics: Metrics,
        prefill_chunk: int = 256,
    ) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.metrics = metrics
        self.prefill_chunk = prefill_chunk
        self.decoder = self._new_decoder()
        self.condition = threading.Condition()
        self.waiting: deque[Job] = deque()
        self.cancel_requests: list[Job] = []
        self.jobs: dict[int, Job] = {}  # by BatchDecoder handle; owned by the thread
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="scratchlm-scheduler", daemon=True)

    def _new_decoder(self) -> BatchDecoder:
        return BatchDecoder(self.model, max_batch=self.max_batch, prefill_chunk=self.prefill_chunk)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.condition:
            self.stopping = True
            self.condition.notify()
        self.thread.join(timeout=10)

    def submit(
        self, requests: list[GenerationRequest], *, streaming: bool = False
    ) -> tuple[list[Job], asyncio.Queue[Event]]:
        """Queue all of a request's rows or none (QueueFull); call from the event loop.
        `streaming`: the client reads tokens as they come, so the scheduler gives the HTTP side
        time to send each row's first tokens (see FIRST_DELIVERY_WAIT_S)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        jobs = [
            Job(index, request, loop, events, streaming=streaming)
            for index, request in enumerate(requests)
        ]
        with self.condition:
            if self.stopping:
                raise QueueFull("the server is shutting down")
            # Rows that can start at once (free batch slots) do not count against the queue.
            free_slots = max(0, self.max_batch - self.decoder.active)
            if len(self.waiting) + len(jobs) - free_slots > self.max_queue:
                raise QueueFull(
                    f"the server is busy: {len(self.waiting)} rows are waiting (limit "
                    f"--max-queue {self.max_queue}) and all {self.max_batch} batch slots are in "
                    "use; retry later"
                )
            self.waiting.extend(jobs)
            self.metrics.set_load(len(self.waiting), self.decoder.active)
            self.condition.notify()
        return jobs, events

    def cancel(self, jobs: list[Job]) -> None:
        """Free these rows now (the client went away or the text hit a stop string)."""
        with self.condition:
            for job in jobs:
                if job.cancelled:
                    continue
                job.cancelled = True
                if job in self.waiting:
                    self.waiting.remove(job)
                    self.metrics.count_cancelled()
                else:
                    self.cancel_requests.append(job)
            self.condition.notify()

    # --- the scheduler thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self.condition:
                while (
                    not self.stopping
                    and not self.waiting
                    and not self.cancel_requests
                    and not self.decoder.active
                ):
                    self.condition.wait()
                if self.stopping:
                    return
                cancels, self.cancel_requests = self.cancel_requests, []
                for job in cancels:
                    # A job is either in the batch (has a handle) or already finished.
                    if job.handle is not None and self.decoder.remove(job.handle) is not None:
                        self.jobs.pop(job.handle, None)
                        self.metrics.count_cancelled()
                admitted: list[Job] = []
                while self.waiting and self.decoder.active + len(admitted) < self.max_batch:
                    admitted.append(self.waiting.popleft())
            for job in admitted:
                try:
                    job.handle = self.decoder.add(job.request)
                except Exception as error:  # a bad row fails alone
                    logger.exception("could not start a row")
                    job.emit(ErrorEvent(job.index, f"generation failed: {error}"))
                    continue
                self.jobs[job.handle] = job
                self.metrics.count_prompt(len(job.request.prompt_ids))
            self._set_load()
            if not self.decoder.active:
                continue
            try:
                finished = self.decoder.step()
            except Exception as error:
                # One forward serves every row, so every row in it fails; the server goes on with
                # a fresh decoder for the next requests.
                logger.exception("a decode step failed")
                failed, self.jobs = list(self.jobs.values()), {}
                self.decoder = self._new_decoder()  # before anyone hears of the failure
                self._set_load()
                for job in failed:
                    job.emit(ErrorEvent(job.index, f"generation failed: {error}"))
                continue
            # The gauges first: a client that hears its row is done then reads the batch without it.
            self._set_load()
            first = self._deliver(
                list(self.decoder.rows) + finished, {row.handle for row in finished}
            )
            if first and self.decoder.active <= FIRST_DELIVERY_WAIT_MAX_ROWS:
                deadline = time.monotonic() + FIRST_DELIVERY_WAIT_S
                for job in first:
                    job.first_handled.wait(max(0.0, deadline - time.monotonic()))

    def _set_load(self) -> None:
        with self.condition:
            self.metrics.set_load(len(self.waiting), self.decoder.active)

    def _deliver(self, rows: list[Row], finished: set[int]) -> list[Job]:
        """Hand every row's new tokens (and its end) to its job; returns the streaming jobs that
        got their first tokens."""
        generated = 0
        first: list[Job] = []
        for row in rows:
            job = self.jobs.get(row.handle)
            if job is None:
                continue
            new_tokens = row.generated[job.sent :]
            if new_tokens and job.sent == 0 and job.streaming:
                first.append(job)
            if new_tokens:
                logprobs = row.logprobs[job.sent :] if row.request.logprobs is not None else []
                prompt_logprobs = row.prompt_logprobs if job.sent == 0 else []
                job.sent = len(row.generated)
                generated += len(new_tokens)
                job.emit(TokensEvent(job.index, new_tokens, logprobs, prompt_logprobs))
            if row.handle in finished:
                del self.jobs[row.handle]
                if row.finish_reason == "error":
                    # This row alone failed (its sampling or its prefill): only its job hears.
                    logger.error("a row failed: %s", row.error)
                    job.emit(ErrorEvent(job.index, f"generation failed: {row.error}"))
                else:
                    job.emit(
                        DoneEvent(
                            job.index,
                            row.finish_reason or "length",
                            row.prompt_logprobs if job.sent == 0 else [],
                        )
                    )
        if generated:
            self.metrics.count_generated(generated)
        return first
