"""Text cleaning: Unicode normalization, an optional ASCII filter, whitespace normalization, and
dropping empty, too-short and exactly duplicated documents.

The text transforms (`clean_piece`) work on one piece of a document at a time, so a huge document is
cleaned without ever being one string. `sources` cuts pieces only between an ASCII non-space character
and an ASCII whitespace character; at such a cut every transform here gives the same result piecewise
as on the whole text (no normalization, whitespace run or dropped character spans the cut), which is
what makes streaming exact rather than approximate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from scratchlm.errors import ScratchLMError

UnicodeNormalization = Literal["NFC", "NFKC"]
_NORMALIZATION_FORMS = ("NFC", "NFKC")

# Typographic punctuation that has an obvious ASCII spelling: mapped instead of dropped by the ASCII
# filter, so "don’t" stays "don't" instead of becoming "dont".
_ASCII_FALLBACKS = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2033": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2026": "...",
        "\u00a0": " ",
    }
)
_LINE_BREAKS = re.compile(r"\r\n?")
# Every whitespace character except the newline (spaces, tabs, no-break and other Unicode spaces).
_INLINE_WHITESPACE = re.compile(r"[^\S\n]+")
_SPACE_BEFORE_NEWLINE = re.compile(r" \n")
_THREE_OR_MORE_NEWLINES = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class CleaningOptions:
    """What cleaning does to each document before it is tokenized."""

    unicode_normalization: UnicodeNormalization | None = "NFC"
    ascii_only: bool = False
    # Collapse runs of spaces/tabs, strip trailing spaces, collapse 3+ newlines to 2, strip the
    # document's ends. Single newlines stay: character models need them.
    normalize_whitespace: bool = True
    min_chars: int = 1
    deduplicate: bool = True

    def __post_init__(self) -> None:
        if (
            self.unicode_normalization is not None
            and self.unicode_normalization not in _NORMALIZATION_FORMS
        ):
            raise ScratchLMError(
                f"unknown Unicode normalization {self.unicode_normalization!r}; "
                "use NFC, NFKC or none"
            )
        if self.min_chars < 0:
            raise ScratchLMError(f"min_chars must be 0 or more, got {self.min_chars}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CleaningOptions:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ScratchLMError(
                f"unknown cleaning options {sorted(unknown)}; the options are {sorted(known)}"
            )
        return cls(**values)


@dataclass
class CleaningCounts:
    """What cleaning kept and dropped (documents, except `dropped_non_ascii_chars`)."""

    documents_seen: int = 0
    kept: int = 0
    dropped_empty: int = 0
    dropped_short: int = 0
    dropped_duplicate: int = 0
    dropped_non_ascii_chars: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def clean_piece(
    text: str, options: CleaningOptions, *, is_first: bool = True, is_last: bool = True
) -> tuple[str, int]:
    """Clean one piece of a document; return the cleaned text and the non-ASCII characters dropped.

    `is_first`/`is_last` say whether the piece starts/ends the document (whose ends get stripped).
    A whole document is one piece with both flags set.
    """
    if options.unicode_normalization is not None:
        text = unicodedata.normalize(options.unicode_normalization, text)
    dropped_non_ascii = 0
    if options.ascii_only and not text.isascii():
        text = text.translate(_ASCII_FALLBACKS)
        ascii_text = text.encode("ascii", "ignore").decode("ascii")
        dropped_non_ascii = len(text) - len(ascii_text)
        text = ascii_text
    if options.normalize_whitespace:
        text = _LINE_BREAKS.sub("\n", text)
        text = _INLINE_WHITESPACE.sub(" ", text)
        text = _SPACE_BEFORE_NEWLINE.sub("\n", text)
        text = _THREE_OR_MORE_NEWLINES.sub("\n\n", text)
        if is_first:
            text = text.lstrip()
        if is_last:
            text = text.rstrip()
    return text, dropped_non_ascii


def clean_text(text: str, options: CleaningOptions) -> str:
    """The cleaned form of a whole document (the text transforms only; no dropping)."""
    return clean_piece(text, options)[0]


def text_digest(text: str) -> bytes:
    """The key exact de-duplication uses: 16 bytes per document is all it keeps in memory."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class DocumentFilter:
    """Decides, document by document, whether a cleaned document is kept, and counts the verdicts.

    Memory: one 16-byte digest per kept document (for exact de-duplication).
    """

    def __init__(self, options: CleaningOptions, counts: CleaningCounts | None = None) -> None:
        self.options = options
        self.counts = counts if counts is not None else CleaningCounts()
        self._seen_digests: set[bytes] = set()

    def keep(self, cleaned_chars: int, digest: bytes | None) -> bool:
        """Record one document (its cleaned length and digest) and return whether to keep it."""
        self.counts.documents_seen += 1
        if cleaned_chars == 0:
            self.counts.dropped_empty += 1
            return False
        if cleaned_chars < self.options.min_chars:
            self.counts.dropped_short += 1
            return False
        if self.options.deduplicate and digest is not None:
            if digest in self._seen_digests:
                self.counts.dropped_duplicate += 1
                return False
            self._seen_digests.add(digest)
        self.counts.kept += 1
        return True


def clean_documents(
    texts: Iterable[str], options: CleaningOptions, counts: CleaningCounts | None = None
) -> Iterator[str]:
    """Clean and filter an iterable of whole-document strings, yielding the kept cleaned texts."""
    document_filter = DocumentFilter(options, counts)
    for text in texts:
        cleaned, dropped_non_ascii = clean_piece(text, options)
        document_filter.counts.dropped_non_ascii_chars += dropped_non_ascii
        if document_filter.keep(len(cleaned), text_digest(cleaned)):
            yield cleaned
