"""The scheduler thread (scratchlm.server.scheduler) without HTTP: the wait for a streaming row's
first tokens to be sent is bounded, and only streaming rows' first tokens are waited for."""

from __future__ import annotations

import asyncio
from typing import Any

from scratchlm.checkpoint import Checkpoint
from scratchlm.inference.batch import GenerationRequest
from scratchlm.inference.settings import GREEDY
from scratchlm.server.metrics import Metrics
from scratchlm.server.scheduler import DoneEvent, ErrorEvent, Event, Job, Scheduler, TokensEvent


class RecordingScheduler(Scheduler):
    """Records which jobs each step reported as having got their first tokens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_reports: list[list[Job]] = []

    def _deliver(self, rows: Any, finished: set[int]) -> list[Job]:
        first = super()._deliver(rows, finished)
        self.first_reports.append(first)
        return first


async def _tokens(events: asyncio.Queue[Event]) -> list[int]:
    tokens: list[int] = []
    while True:
        event = await asyncio.wait_for(events.get(), 60)
        if isinstance(event, TokensEvent):
            tokens.extend(event.tokens)
        assert not isinstance(event, ErrorEvent), event
        if isinstance(event, DoneEvent):
            return tokens


def test_first_tokens_of_streaming_rows_are_waited_for_a_bounded_time(loaded: Checkpoint) -> None:
    """Nobody acknowledges the streaming row's first tokens here (the HTTP side would set
    `first_handled` once it has sent them): the row still runs to its end, with the tokens of the
    same request submitted without streaming. Each streaming row is reported once, at its first
    tokens; rows that are not streamed never are."""
    prompt = loaded.tokenizer.encode("Tom ran")

    async def main() -> None:
        scheduler = RecordingScheduler(loaded.model, max_batch=4, max_queue=4, metrics=Metrics())
        scheduler.start()
        try:
            request = GenerationRequest(prompt, max_new_tokens=6, sampling=GREEDY)
            # Alone in the batch (the scheduler waits only while it is small), then two together.
            streamed, streamed_events = scheduler.submit([request], streaming=True)
            streamed_tokens = await _tokens(streamed_events)
            pair, pair_events = scheduler.submit([request, request], streaming=True)
            streamed += pair
            streamed_tokens += await _tokens(pair_events) + await _tokens(pair_events)
            plain, plain_events = scheduler.submit([request])
            plain_tokens = await _tokens(plain_events)
        finally:
            scheduler.stop()
        assert len(plain_tokens) == 6 and streamed_tokens == plain_tokens * 3
        assert all(job.streaming for job in streamed) and not plain[0].streaming
        reported = [job for report in scheduler.first_reports for job in report]
        assert sorted(id(job) for job in reported) == sorted(id(job) for job in streamed)
        assert not any(job.first_handled.is_set() for job in streamed)  # nobody set them

    asyncio.run(main())
