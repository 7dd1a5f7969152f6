"""Read documents from every kind of data source, streaming, so a corpus never has to fit in memory.

A source is a string: a `.txt` file, a directory of `.txt` files, a `.jsonl` or `.parquet` file, a
`.tar.gz` holding `train.txt`/`test.txt`, an `http(s)://` URL of one of those (downloaded once into the
cache), `hf:NAME[:CONFIG]` or `owner/name` (a Hugging Face dataset, streamed with `datasets`), a
shortcut from `SHORTCUTS`, or `synthetic[:MEGABYTES]`.

A `Document` hands out its text in pieces: a document shorter than `PIECE_CHARS` is one piece (and its
whole `text` is available for de-duplication and length checks); a longer one (e.g. a 5 GB `.txt` that
is a single document) is streamed in pieces of about `PIECE_CHARS` characters, each cut at a point where
cleaning and tokenization give the same result as on the whole text (see `cleaning`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from scratchlm.data.cleaning import CleaningOptions, clean_piece
from scratchlm.errors import ScratchLMError
from scratchlm.tokenizer import require_unicode

# Bytes read from a file at a time (cut back to the last line end, so documents split on lines).
READ_CHUNK_BYTES = 1 << 20
# Longest piece of a streamed document, in characters. Shorter documents stay whole.
PIECE_CHARS = 1 << 20
# How far back from the ideal cut `_safe_cut` looks for a safe boundary before giving up.
SAFE_CUT_SEARCH_CHARS = 1 << 16

END_OF_TEXT_LINE = "<|endoftext|>"
DEFAULT_SYNTHETIC_MEGABYTES = 10

# Named shortcuts for the public datasets the seeds use. Plain data: the kind says how to read it.
SHORTCUTS: dict[str, dict[str, str]] = {
    # Karpathy's char-rnn tiny Shakespeare (1.1 MB, one document; val is the last 10%, as nanoGPT).
    "shakespeare": {
        "kind": "url",
        "location": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    },
    # TinyStories (Eldan & Li 2023): ~2.1M short GPT-generated stories; has a validation split.
    "tinystories": {"kind": "hf", "location": "roneneldan/TinyStories", "text_field": "text"},
    # WikiText-2 raw (Merity et al. 2016): one record per line of Wikipedia text; records are joined
    # back into articles at each top-level heading (" = Title = ") so EOS ends articles, not lines.
    "wikitext2": {
        "kind": "hf",
        "location": "Salesforce/wikitext",
        "config": "wikitext-2-raw-v1",
        "text_field": "text",
        "document_start_pattern": r"^ = [^=]",
    },
    # FineWeb-Edu 10B-token sample: educational web pages, streamed (far too big to download first).
    "fineweb": {
        "kind": "hf",
        "location": "HuggingFaceFW/fineweb-edu",
        "config": "sample-10BT",
        "text_field": "text",
    },
}

_FILE_SUFFIXES = (".txt", ".jsonl", ".parquet", ".tar.gz", ".tgz")
_UNSUPPORTED_SUFFIXES = (".json", ".zip", ".gz", ".bz2", ".xz", ".zst", ".7z", ".arrow", ".csv")
# Split names tried in order when a multi-split source is asked for a split.
_TAR_MEMBER_NAMES = {
    "train": ("train.txt",),
    "val": ("test.txt", "valid.txt", "validation.txt", "val.txt"),
}
_HF_SPLIT_NAMES = {"train": ("train",), "val": ("validation", "valid", "val", "test")}
_HF_DATASET_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# A line that is exactly <|endoftext|> (TinyStories' document separator), tolerating \r and spaces.
_END_OF_TEXT_LINE_PATTERN = re.compile(r"^<\|endoftext\|>[ \t]*\r?(?:\n|\Z)", re.MULTILINE)
# A cut after an ASCII non-space character that is followed by ASCII whitespace.
_SAFE_BOUNDARY = re.compile(r"[!-~](?=[ \t\n\r\f\v])")


class SplitNotFound(ScratchLMError):
    """The source has no such split (e.g. a plain .txt has no separate validation part)."""


class Document:
    """One document, handing out its text in pieces.

    `text` holds the whole text when the document is shorter than `PIECE_CHARS`, else it is None and
    `pieces()` streams it (once: a streamed document reads its source as it goes).
    """

    def __init__(
        self, origin: str, text: str | None = None, stream: Iterator[str] | None = None
    ) -> None:
        assert (text is None) != (stream is None), "a Document has either text or a stream"
        self.origin = origin
        self.text = text
        self._stream = stream

    @property
    def is_streamed(self) -> bool:
        return self.text is None

    def pieces(self) -> Iterator[str]:
        if self.text is not None:
            yield self.text
            return
        assert self._stream is not None, "a streamed Document can be read only once"
        stream, self._stream = self._stream, None
        yield from stream

    def __repr__(self) -> str:
        size = f"{len(self.text)} chars" if self.text is not None else "streamed"
        return f"Document({self.origin!r}, {size})"


@dataclass(frozen=True)
class ResolvedSource:
    """What a source string names. `kind`: text, directory, jsonl, parquet, tar, url, hf, synthetic."""

    kind: str
    location: str
    config: str | None = None
    text_field: str | None = None
    document_start_pattern: str | None = None


def default_cache_root() -> Path:
    """`$SCRATCHLM_CACHE`, else `~/.cache/scratchlm`: downloads, synthetic corpora, prepared data."""
    configured = os.environ.get("SCRATCHLM_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "scratchlm"


def resolve_source(source: str) -> ResolvedSource:
    """Say what `source` names, without reading it (only stat calls)."""
    if not source or not source.strip():
        raise ScratchLMError(
            "the data source is empty; pass a file, directory, URL or dataset name"
        )
    if source in SHORTCUTS:
        definition = SHORTCUTS[source]
        return ResolvedSource(
            kind=definition["kind"],
            location=definition["location"],
            config=definition.get("config"),
            text_field=definition.get("text_field"),
            document_start_pattern=definition.get("document_start_pattern"),
        )
    if source == "synthetic" or source.startswith("synthetic:"):
        megabytes_text = source.partition(":")[2] or str(DEFAULT_SYNTHETIC_MEGABYTES)
        try:
            megabytes = float(megabytes_text)
        except ValueError:
            megabytes = -1.0
        if not megabytes > 0:
            raise ScratchLMError(
                f"{source!r}: the size after 'synthetic:' must be a positive number of megabytes, "
                "e.g. synthetic:10"
            )
        return ResolvedSource(kind="synthetic", location=megabytes_text)
    if source.startswith("hf:"):
        name, _, config = source[3:].partition(":")
        if not name:
            raise ScratchLMError(f"{source!r} names no dataset; write hf:NAME or hf:NAME:CONFIG")
        return ResolvedSource(kind="hf", location=name, config=config or None)
    if source.startswith(("http://", "https://")):
        _kind_from_suffix(_url_path(source), source)  # fail early on an unsupported suffix
        return ResolvedSource(kind="url", location=source)
    path = Path(source).expanduser()
    if path.is_dir():
        return ResolvedSource(kind="directory", location=str(path))
    if path.exists():
        return ResolvedSource(kind=_kind_from_suffix(path.name, source), location=str(path))
    if _HF_DATASET_NAME.match(source) and not source.lower().endswith(_FILE_SUFFIXES):
        return ResolvedSource(kind="hf", location=source)
    raise ScratchLMError(
        f"data source {source!r} does not exist; pass an existing .txt/.jsonl/.parquet/.tar.gz file "
        "or directory of .txt files, an http(s) URL, hf:NAME[:CONFIG], synthetic[:MB], or one of "
        f"{', '.join(sorted(SHORTCUTS))}"
    )


def source_identity(source: str) -> dict[str, Any]:
    """What identifies the content of `source`, for cache keys: path + size + mtime for local data."""
    resolved = resolve_source(source)
    identity: dict[str, Any] = dataclasses.asdict(resolved)
    if resolved.kind == "directory":
        files = [
            [str(path.relative_to(resolved.location)), stat.st_size, stat.st_mtime_ns]
            for path in _directory_text_files(Path(resolved.location))
            for stat in [path.stat()]
        ]
        identity["location"] = str(Path(resolved.location).resolve())
        identity["files"] = files
    elif resolved.kind in ("text", "jsonl", "parquet", "tar"):
        path = Path(resolved.location).resolve()
        stat = path.stat()
        identity.update(location=str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return identity


def iter_documents(
    source: str,
    *,
    split: str = "train",
    text_field: str = "text",
    cache_dir: Path | None = None,
    doc_separator: str | None = None,
    progress: bool = True,
) -> Iterator[Document]:
    """The documents of `source`'s `split` ("train" or "val"), read lazily.

    Problems visible up front (missing or empty file, absent split, missing archive member) raise
    `ScratchLMError` here, before the first document; `SplitNotFound` when the source has no such
    split (a single file has only "train").
    """
    if split not in ("train", "val"):
        raise ScratchLMError(f"unknown split {split!r}; use 'train' or 'val'")
    if doc_separator == "":
        raise ScratchLMError("the document separator is empty; pass a non-empty --doc-separator")
    resolved = resolve_source(source)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_root()
    text_field = resolved.text_field or text_field

    if resolved.kind == "hf":
        return _hf_documents(resolved, split, text_field)
    if resolved.kind == "url":
        from scratchlm.data.download import download

        local = download(resolved.location, cache_dir, progress=progress)
        kind = _kind_from_suffix(_url_path(resolved.location), source)
        return _local_documents(kind, local, split, text_field, doc_separator)
    if resolved.kind == "synthetic":
        local = _synthetic_corpus(float(resolved.location), cache_dir)
        return _local_documents("text", local, split, text_field, doc_separator)
    return _local_documents(
        resolved.kind, Path(resolved.location), split, text_field, doc_separator
    )


def sample_text(
    source: str,
    *,
    max_chars: int,
    split: str = "train",
    text_field: str = "text",
    cache_dir: Path | None = None,
    doc_separator: str | None = None,
    cleaning: CleaningOptions | None = None,
    progress: bool = True,
) -> Iterator[str]:
    """Cleaned document texts from the start of `source`, up to `max_chars` in all (for training a
    tokenizer). A streamed document is yielded piece by piece; the last text may be cut short."""
    if max_chars <= 0:
        raise ScratchLMError(f"max_chars must be positive, got {max_chars}")
    options = cleaning if cleaning is not None else CleaningOptions()
    remaining = max_chars
    documents = iter_documents(
        source,
        split=split,
        text_field=text_field,
        cache_dir=cache_dir,
        doc_separator=doc_separator,
        progress=progress,
    )
    for document in documents:
        for is_first, is_last, piece in pieces_with_position(document.pieces()):
            cleaned = clean_piece(piece, options, is_first=is_first, is_last=is_last)[0]
            if not cleaned:
                continue
            yield cleaned[:remaining]
            remaining -= min(len(cleaned), remaining)
            if remaining == 0:
                return


def pieces_with_position(pieces: Iterator[str]) -> Iterator[tuple[bool, bool, str]]:
    """(is_first, is_last, piece) for each piece, looking one ahead."""
    previous = next(pieces, None)
    if previous is None:
        return
    is_first = True
    for piece in pieces:
        yield is_first, False, previous
        is_first = False
        previous = piece
    yield is_first, True, previous


# --- local files -----------------------------------------------------------------------------------


def _url_path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path


def _kind_from_suffix(name: str, source: str) -> str:
    """How to read a file, from its name. Unknown suffixes are read as text (wiki.train.tokens,
    input, ...); formats that are surely not plain text are refused with the fix instead."""
    lowered = name.lower()
    if lowered.endswith((".tar.gz", ".tgz")):
        return "tar"
    for suffix, kind in ((".txt", "text"), (".jsonl", "jsonl"), (".parquet", "parquet")):
        if lowered.endswith(suffix):
            return kind
    if lowered.endswith(_UNSUPPORTED_SUFFIXES):
        raise ScratchLMError(
            f"cannot read {source!r}: unsupported file type; pass a .txt, .jsonl, .parquet or "
            ".tar.gz file, or a directory of .txt files (convert a JSON array to one object per "
            "line, .jsonl; unpack other archives)"
        )
    return "text"


def _local_documents(
    kind: str, path: Path, split: str, text_field: str, doc_separator: str | None
) -> Iterator[Document]:
    if kind == "tar":
        return _tar_documents(path, split, doc_separator)
    if split != "train":
        raise SplitNotFound(
            f"{path} has no separate {split} split; pass a validation source or let the last part "
            "of the training data be carved off"
        )
    if kind == "directory":
        files = _directory_text_files(path)
        if not files:
            raise ScratchLMError(
                f"directory {path} holds no .txt files; put the text in *.txt files or pass a file"
            )
        return _directory_documents(files, doc_separator)
    _check_readable_file(path)
    if kind == "text":
        return _text_file_documents(path, doc_separator)
    if kind == "jsonl":
        return _jsonl_documents(path, text_field)
    if kind == "parquet":
        return _parquet_documents(path, text_field)
    raise AssertionError(f"unhandled source kind {kind}")


def _check_readable_file(path: Path) -> None:
    if not path.is_file():
        raise ScratchLMError(f"data file {path} does not exist; check the path")
    if path.stat().st_size == 0:
        raise ScratchLMError(f"data file {path} is empty; pass a file that contains text")


def _directory_text_files(directory: Path) -> list[Path]:
    return sorted(
        (path for path in directory.rglob("*.txt") if path.is_file()),
        key=lambda path: path.relative_to(directory).as_posix(),
    )


def _directory_documents(files: list[Path], doc_separator: str | None) -> Iterator[Document]:
    for path in files:
        if path.stat().st_size == 0:
            continue  # an empty file among many is no reason to stop
        yield from _text_file_documents(path, doc_separator)


def _open_binary(path: Path) -> IO[bytes]:
    """Open a data file for reading (a seam the tests use to watch the read sizes)."""
    return open(path, "rb")


def _text_file_documents(path: Path, doc_separator: str | None) -> Iterator[Document]:
    with _open_binary(path) as stream:
        yield from _stream_documents(stream, str(path), doc_separator)


def _stream_documents(
    stream: IO[bytes], name: str, doc_separator: str | None
) -> Iterator[Document]:
    chunks = _decoded_chunks(stream, name)
    if doc_separator is None:
        segments = _split_on_end_of_text_lines(chunks)
    else:
        segments = _split_on_string((text for text, _ in chunks), doc_separator)
    return _group_into_documents(segments, name)


def _decoded_chunks(stream: IO[bytes], name: str) -> Iterator[tuple[str, bool]]:
    """The stream's text as (chunk, starts_at_line_start), chunks of about `READ_CHUNK_BYTES` that end
    at a line end unless a line is longer than that. Bad UTF-8 raises an error naming its offset."""
    carry = b""
    offset = 0  # file offset of the first byte of `carry`
    starts_at_line_start = True
    while True:
        data = stream.read(READ_CHUNK_BYTES)
        buffer = carry + data if carry else data
        if not buffer:
            return
        if not data:
            cut = len(buffer)  # end of file: the rest, whatever it ends with
        else:
            cut = buffer.rfind(b"\n") + 1
            if cut == 0:
                if len(buffer) < READ_CHUNK_BYTES:
                    carry = buffer
                    continue
                cut = _utf8_boundary(buffer)
                if cut == 0:
                    carry = buffer
                    continue
        chunk = buffer[:cut]
        carry = buffer[cut:]
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as error:
            bad_offset = offset + error.start
            raise ScratchLMError(
                f"{name} is not valid UTF-8: the byte at offset {bad_offset} "
                f"(0x{chunk[error.start]:02x}) cannot be decoded; pass a UTF-8 file, e.g. convert "
                f"it with `iconv -f latin1 -t utf-8 {name} > converted.txt`"
            ) from None
        if offset == 0 and text.startswith("\ufeff"):
            text = text[1:]  # a byte-order mark is not text
        offset += cut
        yield text, starts_at_line_start
        starts_at_line_start = chunk.endswith(b"\n")
        if not data:
            return


def _utf8_boundary(buffer: bytes) -> int:
    """A cut at most 4 bytes before the end that splits no UTF-8 character (nor a \\r\\n)."""
    cut = len(buffer)
    # Continuation bytes look like 0b10xxxxxx; back up over at most three of them to a lead byte.
    while cut > len(buffer) - 4 and cut > 0 and (buffer[cut - 1] & 0xC0) == 0x80:
        cut -= 1
    if cut > 0 and buffer[cut - 1] >= 0xC0:
        cut -= 1  # the lead byte of a character whose continuation bytes are not all here
    if cut > 1 and buffer[cut - 1 : cut] == b"\r":
        cut -= 1
    return cut


Segment = tuple[str, bool]  # (text, ends_document)


def _split_on_end_of_text_lines(chunks: Iterable[tuple[str, bool]]) -> Iterator[Segment]:
    """Split line-aligned chunks on lines that are exactly <|endoftext|>."""
    pending_content = False
    for text, starts_at_line_start in chunks:
        position = 0
        for match in _END_OF_TEXT_LINE_PATTERN.finditer(text):
            if match.start() == 0 and not starts_at_line_start:
                continue  # the chunk starts mid-line: "^" here is not a real line start
            yield text[position : match.start()], True
            pending_content = False
            position = match.end()
        if position < len(text):
            yield text[position:], False
            pending_content = True
    if pending_content:
        yield "", True


def _split_on_string(chunks: Iterable[str], separator: str) -> Iterator[Segment]:
    """Split a stream of text chunks on every occurrence of `separator`, even across chunks."""
    pending = ""
    pending_content = False
    keep = len(separator) - 1  # a separator may start in the last keep characters of a chunk
    for chunk in chunks:
        pending += chunk
        parts = pending.split(separator)
        for part in parts[:-1]:
            yield part, True
            pending_content = False
        tail = parts[-1]
        if len(tail) > keep:
            yield tail[: len(tail) - keep], False
            pending_content = True
            tail = tail[len(tail) - keep :]
        pending = tail
    if pending or pending_content:
        yield pending, True


def _group_into_documents(segments: Iterator[Segment], origin: str) -> Iterator[Document]:
    """Turn (text, ends_document) segments into Documents: whole when shorter than PIECE_CHARS, else
    streamed. Like itertools.groupby, a streamed document reads the shared segment stream; whatever
    the consumer leaves unread is skipped before the next document."""
    buffer: list[str] = []
    buffered_chars = 0
    index = 0
    for text, ends_document in segments:
        buffer.append(text)
        buffered_chars += len(text)
        if ends_document:
            yield Document(f"{origin} document {index}", text="".join(buffer))
        elif buffered_chars >= PIECE_CHARS:
            stream = _StreamedPieces("".join(buffer), segments)
            yield Document(f"{origin} document {index}", stream=iter(stream))
            stream.skip_rest()
        else:
            continue
        buffer = []
        buffered_chars = 0
        index += 1
    assert not buffer, "segment streams end with an ends_document segment"


class _StreamedPieces:
    """The pieces of one long document, read from a segment stream shared with the next documents."""

    def __init__(self, start: str, segments: Iterator[Segment]) -> None:
        self._pending = start
        self._segments = segments
        self._finished = False

    def __iter__(self) -> Iterator[str]:
        while not self._finished:
            while len(self._pending) > PIECE_CHARS:
                cut = _safe_cut(self._pending, PIECE_CHARS)
                yield self._pending[:cut]
                self._pending = self._pending[cut:]
            text, ends_document = next(self._segments, ("", True))
            self._pending += text
            if ends_document:
                self._finished = True
        while len(self._pending) > PIECE_CHARS:
            cut = _safe_cut(self._pending, PIECE_CHARS)
            yield self._pending[:cut]
            self._pending = self._pending[cut:]
        if self._pending:
            yield self._pending
        self._pending = ""

    def skip_rest(self) -> None:
        while not self._finished:
            self._finished = next(self._segments, ("", True))[1]
        self._pending = ""


def _safe_cut(text: str, target: int) -> int:
    """A cut point <= target between an ASCII non-space and ASCII whitespace, where cleaning and
    tokenization (GPT-2-style pre-tokenizers, characters) are the same piecewise as whole. Falls back
    to `target` for text with no such point (e.g. long runs of CJK); that cut is only approximate."""
    lowest = max(1, target - SAFE_CUT_SEARCH_CHARS)
    best = -1
    for match in _SAFE_BOUNDARY.finditer(text, lowest - 1, target + 1):
        best = match.end()
    if best > 0:
        return best
    return target


# --- jsonl, parquet, tar.gz ------------------------------------------------------------------------


def _jsonl_documents(path: Path, text_field: str) -> Iterator[Document]:
    with _open_binary(path) as stream:
        offset = 0
        for line_number, raw_line in enumerate(stream, start=1):
            line_offset = offset
            offset += len(raw_line)
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ScratchLMError(
                    f"{path} line {line_number} is not valid UTF-8 (byte offset "
                    f"{line_offset + error.start}); pass a UTF-8 file, e.g. convert it with "
                    f"`iconv -f latin1 -t utf-8 {path} > converted.jsonl`"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise ScratchLMError(
                    f"{path} line {line_number} is not valid JSON ({error}); fix or remove that line"
                ) from None
            yield Document(
                f"{path} line {line_number}",
                text=_text_of_record(record, text_field, f"{path} line {line_number}"),
            )


def _text_of_record(record: Any, text_field: str, where: str) -> str:
    if not isinstance(record, dict):
        raise ScratchLMError(
            f"{where} is a JSON {type(record).__name__}, not an object; each line must be an object "
            f'like {{"{text_field}": "..."}}'
        )
    value = record.get(text_field)
    if not isinstance(value, str):
        problem = "has no field" if text_field not in record else "has a non-string field"
        fields = ", ".join(repr(key) for key in record) or "none"
        raise ScratchLMError(
            f"{where} {problem} {text_field!r} (its fields: {fields}); pass --text-field with the "
            "field that holds the text"
        )
    # JSON escapes can spell lone surrogates ("\\ud800") that no tokenizer accepts.
    return require_unicode(value, where)


def _parquet_documents(path: Path, text_field: str) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet_file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise ScratchLMError(
            f"{path} is not a readable Parquet file ({error}); pass a valid .parquet file"
        ) from None
    names = parquet_file.schema_arrow.names
    if text_field not in names:
        raise ScratchLMError(
            f"{path} has no column {text_field!r} (its columns: {', '.join(names)}); "
            "pass --text-field with the column that holds the text"
        )
    column_type = parquet_file.schema_arrow.field(text_field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise ScratchLMError(
            f"{path} column {text_field!r} holds {column_type}, not text; pass --text-field with "
            "a string column"
        )
    return _parquet_rows(parquet_file, path, text_field)


def _parquet_rows(parquet_file: Any, path: Path, text_field: str) -> Iterator[Document]:
    row = 0
    for batch in parquet_file.iter_batches(columns=[text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            # A null cell is an empty document (dropped and counted by cleaning).
            yield Document(f"{path} row {row}", text=value if value is not None else "")
            row += 1


def _tar_documents(path: Path, split: str, doc_separator: str | None) -> Iterator[Document]:
    _check_readable_file(path)
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = [member for member in archive.getmembers() if member.isfile()]
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ScratchLMError(
            f"{path} is not a readable .tar.gz archive ({error}); pass a gzip-compressed tar file"
        ) from None
    by_name: dict[str, tarfile.TarInfo] = {}
    for member in members:
        by_name.setdefault(Path(member.name).name, member)
    candidates = _TAR_MEMBER_NAMES[split]
    chosen = next((by_name[name] for name in candidates if name in by_name), None)
    if chosen is None:
        held = ", ".join(member.name for member in members[:20]) or "nothing"
        message = (
            f"{path} has no {' or '.join(candidates)} (it holds: {held}); put the {split} text in "
            f"{candidates[0]} inside the archive"
        )
        if split == "train":
            raise ScratchLMError(message)
        raise SplitNotFound(message)
    return _tar_member_documents(path, chosen.name, doc_separator)


def _tar_member_documents(
    path: Path, member_name: str, doc_separator: str | None
) -> Iterator[Document]:
    with tarfile.open(path, "r:gz") as archive:
        stream = archive.extractfile(member_name)
        assert stream is not None, "members were filtered to regular files"
        with stream:
            yield from _stream_documents(stream, f"{path}:{member_name}", doc_separator)


# --- Hugging Face datasets, synthetic --------------------------------------------------------------


def _hf_documents(resolved: ResolvedSource, split: str, text_field: str) -> Iterator[Document]:
    try:
        import datasets
    except ImportError:
        raise ScratchLMError(
            f"reading the Hugging Face dataset {resolved.location!r} needs the `datasets` package; "
            "install it with `pip install datasets` (or `pip install scratchlm[hf]`)"
        ) from None
    name = resolved.location
    # A local dataset directory is read like a hub dataset (datasets infers the format).
    if Path(name).expanduser().is_dir():
        name = str(Path(name).expanduser())
    dataset = None
    errors: list[str] = []
    for split_name in _HF_SPLIT_NAMES[split]:
        try:
            dataset = datasets.load_dataset(name, resolved.config, split=split_name, streaming=True)
            break
        except ValueError as error:
            if "split" not in str(error).lower():
                raise _hf_load_error(resolved, error) from None
            errors.append(str(error))
        except Exception as error:  # datasets raises many types (hub, network, config errors)
            raise _hf_load_error(resolved, error) from None
    if dataset is None:
        message = (
            f"the Hugging Face dataset {resolved.location!r} has no {split} split "
            f"({errors[-1] if errors else 'no splits'}); pass a validation source explicitly"
        )
        if split == "train":
            raise ScratchLMError(message)
        raise SplitNotFound(message)
    records = _hf_texts(dataset, resolved.location, text_field)
    if resolved.document_start_pattern:
        return _join_records(records, re.compile(resolved.document_start_pattern), name)
    return (Document(f"{name} record {index}", text=text) for index, text in enumerate(records))


def _hf_load_error(resolved: ResolvedSource, error: Exception) -> ScratchLMError:
    config = f" (config {resolved.config!r})" if resolved.config else ""
    return ScratchLMError(
        f"cannot load the Hugging Face dataset {resolved.location!r}{config}: "
        f"{type(error).__name__}: {error}; check the name, the config and your network, or "
        "download the data yourself and pass the local file"
    )


def _hf_texts(dataset: Any, name: str, text_field: str) -> Iterator[str]:
    for index, record in enumerate(dataset):
        yield _text_of_record(record, text_field, f"{name} record {index}")


def _join_records(
    records: Iterator[str], document_start: re.Pattern[str], name: str
) -> Iterator[Document]:
    """Join line records into documents, starting a new one at each record matching the pattern."""
    buffer: list[str] = []
    index = 0
    for record in records:
        if buffer and document_start.match(record):
            yield Document(f"{name} document {index}", text="".join(buffer))
            buffer = []
            index += 1
        buffer.append(record)
    if buffer:
        yield Document(f"{name} document {index}", text="".join(buffer))


def _synthetic_corpus(megabytes: float, cache_dir: Path) -> Path:
    """The deterministic synthetic story corpus of that size, generated once into the cache."""
    from scratchlm.data.stories.corpus import write_synthetic_corpus

    size_label = f"{megabytes:g}".replace(".", "_")
    from scratchlm.data.stories.corpus import GENERATOR_VERSION

    # The generator's version is in the name: a changed generator never reuses an old corpus.
    path = cache_dir / "synthetic" / f"synthetic-v{GENERATOR_VERSION}-{size_label}MB-seed0.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_synthetic_corpus(path, int(megabytes * 1_000_000), seed=0)
    return path


__all__ = [
    "PIECE_CHARS",
    "READ_CHUNK_BYTES",
    "SHORTCUTS",
    "Document",
    "ResolvedSource",
    "SplitNotFound",
    "default_cache_root",
    "iter_documents",
    "resolve_source",
    "sample_text",
    "source_identity",
]
