"""Incremental detokenization that never emits broken UTF-8.

Byte-level BPE can split one character (an emoji, a CJK glyph) over several tokens; decoding a
prefix then ends in U+FFFD. The decoder re-decodes a short window of recent tokens and only emits
text once it no longer ends in a replacement character.
"""

from __future__ import annotations

from scratchlm.tokenizer import Tokenizer


class IncrementalDecoder:
    def __init__(self, tokenizer: Tokenizer, *, skip_special: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self.ids: list[int] = []
        self.prefix_offset = 0  # start of the window that gives context to the next decode
        self.read_offset = 0  # tokens before this one have been emitted

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        prefix_text = decode(self.ids[self.prefix_offset : self.read_offset], self.skip_special)
        new_text = decode(self.ids[self.prefix_offset :], self.skip_special)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end of generation (may contain U+FFFD)."""
        decode = self.tokenizer.decode
        prefix_text = decode(self.ids[self.prefix_offset : self.read_offset], self.skip_special)
        new_text = decode(self.ids[self.prefix_offset :], self.skip_special)
        self.prefix_offset = self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]
