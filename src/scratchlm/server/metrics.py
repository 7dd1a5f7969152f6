"""Counters and gauges for `GET /metrics`, rendered in the Prometheus text format by hand (no extra
dependency for a dozen numbers)."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

# Recent samples kept for the time-to-first-token quantiles and the tokens/s rate.
QUANTILE_WINDOW = 1000
RATE_WINDOW_SECONDS = 10.0


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # by endpoint
        self.errors: Counter[int] = Counter()  # by HTTP status
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.cancelled_rows = 0  # rows freed because their client went away (or a stop string)
        self.queue_depth = 0
        self.batch_size = 0
        self.batch_size_max = 0
        self.first_token_seconds: deque[float] = deque(maxlen=QUANTILE_WINDOW)
        self.first_token_sum = 0.0
        self.first_token_count = 0
        self.recent_tokens: deque[tuple[float, int]] = deque()
        self.started = time.monotonic()

    def count_request(self, endpoint: str) -> None:
        with self.lock:
            self.requests[endpoint] += 1

    def count_error(self, status: int) -> None:
        with self.lock:
            self.errors[status] += 1

    def count_prompt(self, tokens: int) -> None:
        with self.lock:
            self.prompt_tokens += tokens

    def count_generated(self, tokens: int) -> None:
        now = time.monotonic()
        with self.lock:
            self.generated_tokens += tokens
            self.recent_tokens.append((now, tokens))
            self._forget_old(now)

    def count_cancelled(self) -> None:
        with self.lock:
            self.cancelled_rows += 1

    def observe_first_token(self, seconds: float) -> None:
        with self.lock:
            self.first_token_seconds.append(seconds)
            self.first_token_sum += seconds
            self.first_token_count += 1

    def set_load(self, queue_depth: int, batch_size: int) -> None:
        with self.lock:
            self.queue_depth = queue_depth
            self.batch_size = batch_size
            self.batch_size_max = max(self.batch_size_max, batch_size)

    def _forget_old(self, now: float) -> None:
        while self.recent_tokens and self.recent_tokens[0][0] < now - RATE_WINDOW_SECONDS:
            self.recent_tokens.popleft()

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self.lock:
            self._forget_old(now)
            window = min(RATE_WINDOW_SECONDS, max(now - self.started, 1e-6))
            return sum(count for _, count in self.recent_tokens) / window

    def render(self) -> str:
        rate = self.tokens_per_second()
        with self.lock:
            lines: list[str] = []

            def metric(
                name: str, kind: str, help_text: str, samples: list[tuple[str, float]]
            ) -> None:
                lines.append(f"# HELP scratchlm_{name} {help_text}")
                lines.append(f"# TYPE scratchlm_{name} {kind}")
                for labels, value in samples:
                    lines.append(f"scratchlm_{name}{labels} {value:g}")

            metric(
                "requests_total",
                "counter",
                "Requests received, by endpoint.",
                [
                    (f'{{endpoint="{name}"}}', count)
                    for name, count in sorted(self.requests.items())
                ],
            )
            metric(
                "errors_total",
                "counter",
                "Error responses, by HTTP status code.",
                [(f'{{code="{code}"}}', count) for code, count in sorted(self.errors.items())],
            )
            metric(
                "prompt_tokens_total",
                "counter",
                "Prompt tokens prefilled.",
                [("", self.prompt_tokens)],
            )
            metric(
                "generated_tokens_total",
                "counter",
                "Tokens generated.",
                [("", self.generated_tokens)],
            )
            metric(
                "tokens_per_second",
                "gauge",
                f"Generated tokens per second over the last {RATE_WINDOW_SECONDS:g} s.",
                [("", rate)],
            )
            metric(
                "queue_depth", "gauge", "Rows waiting for a batch slot.", [("", self.queue_depth)]
            )
            metric("batch_size", "gauge", "Rows in the running batch.", [("", self.batch_size)])
            metric(
                "batch_size_max",
                "gauge",
                "The largest batch seen so far.",
                [("", self.batch_size_max)],
            )
            metric(
                "cancelled_rows_total",
                "counter",
                "Rows freed before finishing (client disconnected or a stop string matched).",
                [("", self.cancelled_rows)],
            )
            ordered = sorted(self.first_token_seconds)
            quantiles: list[tuple[str, float]] = []
            for quantile in (0.5, 0.9, 0.99):
                value = (
                    ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] if ordered else 0.0
                )
                quantiles.append((f'{{quantile="{quantile}"}}', value))
            metric(
                "time_to_first_token_seconds",
                "summary",
                "Seconds from request to first generated token (recent requests).",
                quantiles,
            )
            lines.append(f"scratchlm_time_to_first_token_seconds_sum {self.first_token_sum:g}")
            lines.append(f"scratchlm_time_to_first_token_seconds_count {self.first_token_count}")
            return "\n".join(lines) + "\n"
