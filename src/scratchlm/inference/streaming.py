"""Incremental detokenization that never emits broken UTF-8, and stop strings across tokens.

Byte-level BPE can split one character (an emoji, a CJK glyph) over several tokens; decoding a
prefix then ends in U+FFFD. `IncrementalDecoder` re-decodes a short window of recent tokens and
holds back only a final replacement character, the one that may still become a character. A
lossy UTF-8 decoder puts U+FFFD anywhere else only for bytes it has seen followed by what makes
them invalid, so those are final and go out at once: a model that emits stray bytes (an
untrained one does) streams its text as it comes, where holding back all text up to the last
U+FFFD held a whole reply back until its end. `StopStringFilter` holds back text that could be the
start of a stop string, so a stop string split over tokens is still caught and never shown.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from scratchlm.tokenizer import Tokenizer


class IncrementalDecoder:
    def __init__(self, tokenizer: Tokenizer, *, skip_special: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self.ids: list[int] = []
        # The window ids[prefix_offset:] is decoded at each token; its start gives the next
        # decode context (a tokenizer may render a token's leading space by its neighbour).
        self.prefix_offset = 0
        self.read_offset = 0  # where the window's start moves to at the next clean end
        self.emitted = 0  # characters of the window's text already returned

    def _window_text(self, end: int | None = None) -> str:
        return self.tokenizer.decode(self.ids[self.prefix_offset : end], self.skip_special)

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        self.ids.append(token_id)
        text = self._window_text()
        # A final U+FFFD may be the start of a character whose other bytes are still to come.
        clean = not text.endswith("\ufffd")
        final = len(text) if clean else len(text) - 1
        delta = text[self.emitted : final]
        self.emitted = max(self.emitted, final)
        if clean:
            # Everything is out and ends on a whole character: slide the window.
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            self.emitted = len(self._window_text(self.read_offset))
        return delta

    def flush(self) -> str:
        """Whatever is still held back at the end of generation (may contain U+FFFD)."""
        rest = self._window_text()[self.emitted :]
        self.prefix_offset = self.read_offset = len(self.ids)
        self.emitted = 0
        return rest


class StopStringFilter:
    """Feed text deltas; get back the text that is safe to show, and whether a stop string ended it."""

    def __init__(self, stop_strings: Sequence[str]) -> None:
        self.stop_strings = [stop for stop in stop_strings if stop]
        self.pending = ""
        self.stopped = False

    def push(self, delta: str) -> str:
        if self.stopped:
            return ""
        if not self.stop_strings:
            return delta
        self.pending += delta
        cut = min(
            (self.pending.find(stop) for stop in self.stop_strings if stop in self.pending),
            default=-1,
        )
        if cut >= 0:
            self.stopped = True
            safe, self.pending = self.pending[:cut], ""
            return safe
        # Hold back the longest tail that is a prefix of some stop string.
        hold = 0
        for stop in self.stop_strings:
            for size in range(min(len(stop) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(stop[:size]):
                    hold = size
                    break
        safe = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold :]
        return safe

    def flush(self) -> str:
        rest, self.pending = ("" if self.stopped else self.pending), ""
        return rest


class TextStream:
    """Token ids in, text deltas out: valid UTF-8, cut at the first stop string."""

    def __init__(self, tokenizer: Tokenizer, stop_strings: Sequence[str] = ()) -> None:
        self.decoder = IncrementalDecoder(tokenizer)
        self.stops = StopStringFilter(stop_strings)

    @property
    def stopped(self) -> bool:
        """True when a stop string ended the text."""
        return self.stops.stopped

    def feed(self, tokens: Iterator[int]) -> Iterator[str]:
        for token in tokens:
            text = self.stops.push(self.decoder.push(token))
            if text:
                yield text
            if self.stops.stopped:
                return
        tail = self.stops.push(self.decoder.flush()) + self.stops.flush()
        if tail:
            yield tail
