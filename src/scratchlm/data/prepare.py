"""Prepare a dataset: read a source, clean it, tokenize it in worker processes into token shards.

Memory stays bounded whatever the corpus size: documents stream from the source in pieces, a fixed
number of batches is in flight to the workers at a time, tokens go straight to shard files, and the
validation tail is carved off by copying it in chunks. Everything is written into a temporary
directory that is renamed into place only when complete, so an error or a crash leaves no
half-prepared dataset behind.
"""

from __future__ import annotations

import collections
import concurrent.futures
import concurrent.futures.process
import datetime
import hashlib
import itertools
import json
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from tqdm.auto import tqdm

from scratchlm.data.cleaning import (
    CleaningCounts,
    CleaningOptions,
    DocumentFilter,
    clean_piece,
    text_digest,
)
from scratchlm.data.shards import (
    DEFAULT_SHARD_MAX_TOKENS,
    FORMAT_VERSION,
    MANIFEST_NAME,
    ShardInfo,
    ShardWriter,
    TokenShards,
    read_manifest,
    token_dtype,
)
from scratchlm.data.sources import (
    Document,
    SplitNotFound,
    default_cache_root,
    iter_documents,
    pieces_with_position,
    source_identity,
)
from scratchlm.errors import ScratchLMError
from scratchlm.io_utils import atomic_directory, atomic_write_json
from scratchlm.tokenizer import Tokenizer

# Characters of text per batch sent to a worker: big enough to amortize the inter-process cost.
BATCH_CHARS = 1 << 20
BATCH_MAX_PARTS = 4096
# Corpora of at most this many batches are tokenized in this process, without workers.
IN_PROCESS_MAX_BATCHES = 8
# Batches in flight per worker: keeps the workers busy while bounding memory.
IN_FLIGHT_PER_WORKER = 2
# How far (in tokens) the validation cut may move to land on a document boundary, at most.
SNAP_SEARCH_MAX_TOKENS = 1 << 22
COPY_CHUNK_TOKENS = 1 << 20
MAX_DEFAULT_WORKERS = 8
# Every split must hold at least this many tokens (one input and one target).
MIN_SPLIT_TOKENS = 2


@dataclass
class _PartResult:
    """What a worker returns for one piece of a document."""

    tokens: np.ndarray
    cleaned_chars: int
    utf8_bytes: int
    dropped_non_ascii: int
    digest: bytes
    is_first: bool
    is_last: bool


_Part = tuple[str, bool, bool]  # (raw text, is_first_piece, is_last_piece)


class _BatchProcessor:
    """Cleans and tokenizes a batch of document pieces (in a worker process, or in this one)."""

    def __init__(
        self, tokenizer: Tokenizer, options: CleaningOptions, dtype: np.dtype[Any]
    ) -> None:
        self.tokenizer = tokenizer
        self.options = options
        self.dtype = dtype

    def __call__(self, batch: list[_Part]) -> list[_PartResult]:
        cleaned_pieces = [
            clean_piece(text, self.options, is_first=is_first, is_last=is_last)
            for text, is_first, is_last in batch
        ]
        non_empty = [cleaned for cleaned, _ in cleaned_pieces if cleaned]
        encoded = iter(self.tokenizer.encode_batch(non_empty)) if non_empty else iter(())
        empty_tokens = np.empty(0, dtype=self.dtype)
        results = []
        for (cleaned, dropped), (_, is_first, is_last) in zip(cleaned_pieces, batch, strict=True):
            tokens = np.asarray(next(encoded), dtype=self.dtype) if cleaned else empty_tokens
            results.append(
                _PartResult(
                    tokens=tokens,
                    cleaned_chars=len(cleaned),
                    utf8_bytes=len(cleaned.encode("utf-8")),
                    dropped_non_ascii=dropped,
                    digest=text_digest(cleaned),
                    is_first=is_first,
                    is_last=is_last,
                )
            )
        return results


_worker_processor: _BatchProcessor | None = None


def _initialize_worker(tokenizer_json: str, options: dict[str, Any], dtype: str) -> None:
    # Each worker already is one of several processes: the tokenizer's own thread pool would only
    # oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _worker_processor
    _worker_processor = _BatchProcessor(
        Tokenizer.from_json(tokenizer_json), CleaningOptions.from_dict(options), np.dtype(dtype)
    )


def _process_in_worker(batch: list[_Part]) -> list[_PartResult]:
    assert _worker_processor is not None, "the pool initializer sets the processor"
    return _worker_processor(batch)


class _BatchRunner:
    """Runs batches through worker processes (or in-process), yielding results in input order."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        options: CleaningOptions,
        dtype: np.dtype[Any],
        num_workers: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.options = options
        self.dtype = dtype
        self.num_workers = num_workers
        self.local = _BatchProcessor(tokenizer, options, dtype)
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None

    def run(self, batches: Iterator[list[_Part]]) -> Iterator[list[_PartResult]]:
        # Read a few batches ahead: a corpus that ends within them is tokenized here, faster than
        # starting worker processes (each imports the tokenizer stack; seconds on a busy machine).
        head = list(itertools.islice(batches, IN_PROCESS_MAX_BATCHES + 1))
        if len(head) <= IN_PROCESS_MAX_BATCHES or self.num_workers == 0:
            for batch in itertools.chain(head, batches):
                yield self.local(batch)
            return
        executor = self._get_executor()
        # A bounded window of batches in flight, collected oldest first: the output order is the
        # input order and memory does not grow with the corpus.
        in_flight: collections.deque[concurrent.futures.Future[list[_PartResult]]] = (
            collections.deque()
        )
        try:
            for batch in itertools.chain(head, batches):
                in_flight.append(executor.submit(_process_in_worker, batch))
                if len(in_flight) >= self.num_workers * IN_FLIGHT_PER_WORKER:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        except concurrent.futures.process.BrokenProcessPool:
            # A worker died (typically killed for memory); multiprocessing.Pool would hang here.
            raise ScratchLMError(
                "a tokenizer worker process died (often: out of memory); run again with fewer "
                "workers (--data-workers) or on a machine with more memory"
            ) from None

    def _get_executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            # "spawn": Hugging Face tokenizers hold threads that a fork would copy in a broken state.
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.num_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_initialize_worker,
                initargs=(self.tokenizer.to_json(), self.options.to_dict(), self.dtype.str),
            )
        return self._executor

    def close(self, *, success: bool) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=not success)
            self._executor = None


@dataclass
class _SplitTotals:
    tokens: int = 0
    documents: int = 0
    bytes: int = 0


def _batches(documents: Iterable[Document]) -> Iterator[list[_Part]]:
    """Group document pieces into batches of about BATCH_CHARS characters."""
    batch: list[_Part] = []
    batch_chars = 0
    for document in documents:
        for is_first, is_last, piece in pieces_with_position(document.pieces()):
            batch.append((piece, is_first, is_last))
            batch_chars += len(piece)
            if batch_chars >= BATCH_CHARS or len(batch) >= BATCH_MAX_PARTS:
                yield batch
                batch = []
                batch_chars = 0
    if batch:
        yield batch


def _tokenize_split(
    documents: Iterable[Document],
    writer: ShardWriter,
    runner: _BatchRunner,
    document_filter: DocumentFilter,
    eos_id: int,
    *,
    description: str,
    progress: bool,
) -> _SplitTotals:
    """Clean, filter and tokenize `documents` into `writer`, ending each kept document with EOS."""
    totals = _SplitTotals()
    eos = np.asarray([eos_id], dtype=writer.dtype)
    counts = document_filter.counts
    # State of a document that spans several pieces (and so several results).
    document_start = 0
    document_chars = 0
    document_bytes = 0
    document_digest = hashlib.blake2b(digest_size=16)
    with tqdm(desc=description, unit=" docs", disable=None if progress else True) as bar:
        for results in runner.run(_batches(documents)):
            finished_documents = 0
            for result in results:
                counts.dropped_non_ascii_chars += result.dropped_non_ascii
                if result.is_first and result.is_last:
                    # A whole document: judged on its cleaned text before anything is written.
                    finished_documents += 1
                    if document_filter.keep(result.cleaned_chars, result.digest):
                        writer.append(result.tokens)
                        writer.append(eos)
                        totals.documents += 1
                        totals.bytes += result.utf8_bytes
                    continue
                # A streamed document: its pieces are written as they come and taken back if the
                # whole turns out to be dropped. Its digest is a digest of its pieces' digests
                # (identical text is cut into identical pieces).
                if result.is_first:
                    document_start = writer.position
                    document_chars = document_bytes = 0
                    document_digest = hashlib.blake2b(digest_size=16)
                writer.append(result.tokens)
                document_chars += result.cleaned_chars
                document_bytes += result.utf8_bytes
                document_digest.update(result.digest)
                if not result.is_last:
                    continue
                finished_documents += 1
                if document_filter.keep(document_chars, document_digest.digest()):
                    writer.append(eos)
                    totals.documents += 1
                    totals.bytes += document_bytes
                else:
                    writer.truncate(document_start)
            bar.update(finished_documents)
            bar.set_postfix(tokens=writer.position, refresh=False)
    totals.tokens = writer.position
    return totals


def _default_worker_count() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cores))


def _check_output_directory(out_dir: Path) -> None:
    if out_dir.is_file():
        raise ScratchLMError(f"{out_dir} is a file; pass a directory path for the prepared data")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file():
        raise ScratchLMError(
            f"{out_dir} exists and is not a prepared dataset; choose a new or empty output "
            "directory (a previously prepared one is replaced)"
        )


def prepare_dataset(
    source: str,
    out_dir: Path,
    tokenizer: Tokenizer,
    *,
    val_source: str | None = None,
    val_fraction: float = 0.1,
    text_field: str = "text",
    doc_separator: str | None = None,
    cleaning: CleaningOptions = CleaningOptions(),  # noqa: B008 (frozen, so a shared default is safe)
    num_workers: int | None = None,
    shard_max_tokens: int = DEFAULT_SHARD_MAX_TOKENS,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """Tokenize `source` into token shards + manifest.json in `out_dir` (replacing a previously
    prepared dataset there) and return `out_dir`.

    Validation: `val_source` if given, else the source's own validation split if it has one (a
    .tar.gz test.txt, a Hugging Face validation split), else the last `val_fraction` of the training
    tokens, moved to the nearest document boundary when one is close. `num_workers`: tokenizer
    processes (None: one per core, up to 8; 0: tokenize in this process).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ScratchLMError(
            f"the validation fraction must be in [0, 1), got {val_fraction}; e.g. 0.1 for 10%"
        )
    if num_workers is not None and num_workers < 0:
        raise ScratchLMError(f"num_workers must be 0 or more, got {num_workers}")
    out_dir = Path(out_dir)
    if (Path(source) / MANIFEST_NAME).is_file():
        raise ScratchLMError(
            f"{source} is already a prepared dataset; pass it to `train --data` as it is"
        )
    _check_output_directory(out_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_root()
    read_options: dict[str, Any] = {
        "text_field": text_field,
        "cache_dir": cache_dir,
        "doc_separator": doc_separator,
        "progress": progress,
    }

    # Open both inputs first, so a missing validation file fails before the long training pass.
    train_documents = iter_documents(source, split="train", **read_options)
    val_documents: Iterator[Document] | None = None
    validation = "none"
    if val_source is not None:
        try:
            val_documents = iter_documents(val_source, split="val", **read_options)
        except SplitNotFound:
            val_documents = iter_documents(val_source, split="train", **read_options)
        validation = "val_source"
    else:
        try:
            val_documents = iter_documents(source, split="val", **read_options)
            validation = "source_split"
        except SplitNotFound:
            if val_fraction > 0:
                validation = f"last {val_fraction:g} of train"

    dtype = token_dtype(tokenizer.vocab_size)
    workers = _default_worker_count() if num_workers is None else num_workers
    runner = _BatchRunner(tokenizer, cleaning, dtype, workers)
    success = False
    try:
        with atomic_directory(out_dir, replace=True) as work_dir:

            def tokenize(split: str, documents: Iterable[Document], where: str, fix: str) -> Any:
                """Tokenize one split into its own shards; a split left empty is an error."""
                writer = ShardWriter(work_dir, split, dtype, shard_max_tokens)
                document_filter = DocumentFilter(cleaning)
                totals = _tokenize_split(
                    documents,
                    writer,
                    runner,
                    document_filter,
                    _eos_id(tokenizer),
                    description=f"tokenizing {split}",
                    progress=progress,
                )
                if totals.documents == 0:
                    raise ScratchLMError(
                        f"{where} has no documents left after cleaning "
                        f"({_describe_counts(document_filter.counts)}); {fix}"
                    )
                counts[split] = document_filter.counts.to_dict()
                return writer, totals

            counts: dict[str, Any] = {}
            train_writer, train = tokenize(
                "train",
                train_documents,
                str(source),
                "check the source and --text-field, or relax the cleaning (e.g. a lower --min-chars)",
            )
            splits: dict[str, dict[str, Any]] = {}
            if val_documents is not None:
                val_writer, val = tokenize(
                    "val",
                    val_documents,
                    f"the validation data ({val_source or source})",
                    "pass another --val-data or relax the cleaning",
                )
                splits["val"] = _split_record(val, val_writer.close())
            elif val_fraction > 0:
                val_writer = ShardWriter(work_dir, "val", dtype, shard_max_tokens)
                train, val = _carve_validation_tail(
                    train_writer, val_writer, train, tokenizer, val_fraction, source
                )
                splits["val"] = _split_record(val, val_writer.close())
            splits = {"train": _split_record(train, train_writer.close()), **splits}
            manifest = {
                "format_version": FORMAT_VERSION,
                "dtype": dtype.name,
                "vocab_size": tokenizer.vocab_size,
                "tokenizer_fingerprint": tokenizer.fingerprint(),
                "tokenizer_kind": tokenizer.kind,
                "eos_id": _eos_id(tokenizer),
                "source": source,
                "val_source": val_source,
                "validation": validation,
                "text_field": text_field,
                "doc_separator": doc_separator,
                "cleaning": {"options": cleaning.to_dict(), "counts": counts},
                "splits": splits,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            }
            atomic_write_json(work_dir / MANIFEST_NAME, manifest)
        success = True
    finally:
        runner.close(success=success)
    return out_dir


def _eos_id(tokenizer: Tokenizer) -> int:
    eos_id = tokenizer.eos_id
    assert eos_id is not None, "scratchlm tokenizers always hold <|endoftext|>"
    return int(eos_id)


def _describe_counts(counts: CleaningCounts) -> str:
    return ", ".join(f"{name} {value}" for name, value in counts.to_dict().items())


def _split_record(totals: _SplitTotals, shards: list[ShardInfo]) -> dict[str, Any]:
    assert sum(shard.tokens for shard in shards) == totals.tokens
    return {
        "tokens": totals.tokens,
        "documents": totals.documents,
        "bytes": totals.bytes,
        "shards": [{"file": shard.file, "tokens": shard.tokens} for shard in shards],
    }


def _carve_validation_tail(
    train_writer: ShardWriter,
    val_writer: ShardWriter,
    train: _SplitTotals,
    tokenizer: Tokenizer,
    val_fraction: float,
    source: str,
) -> tuple[_SplitTotals, _SplitTotals]:
    """Move the last `val_fraction` of the training tokens into the validation split.

    The cut moves to the nearest document boundary within half the validation size (so with small
    documents validation holds whole documents); a corpus of one long document is cut mid-text, like
    nanoGPT's last 10% of Shakespeare. Copies in chunks: memory stays bounded.
    """
    total = train_writer.position
    ideal_cut = int(total * (1.0 - val_fraction))
    if ideal_cut < MIN_SPLIT_TOKENS or total - ideal_cut < MIN_SPLIT_TOKENS:
        raise ScratchLMError(
            f"{source} is too small to split off {val_fraction:g} for validation ({total} tokens "
            "in all); add more text, pass a separate validation source (--val-data), or "
            "change the validation fraction"
        )
    eos_id = _eos_id(tokenizer)
    train_shards = _open_written_shards(train_writer, tokenizer)
    radius = min((total - ideal_cut) // 2, SNAP_SEARCH_MAX_TOKENS)
    cut = _snap_to_document_boundary(train_shards, ideal_cut, eos_id, radius)
    val = _SplitTotals()
    decoder = _Utf8ByteCounter(tokenizer)
    for start in range(cut, total, COPY_CHUNK_TOKENS):
        chunk = train_shards.read(start, min(COPY_CHUNK_TOKENS, total - start))
        val_writer.append(chunk)
        val.documents += int(np.count_nonzero(chunk == eos_id))
        decoder.add(chunk)
    val.bytes = decoder.finish()
    val.tokens = val_writer.position
    ends_mid_document = int(train_shards.read(cut - 1, 1)[0]) != eos_id
    train_shards.shards.clear()  # unmap before truncating the files underneath
    del train_shards
    train_writer.truncate(cut)
    trained = _SplitTotals(
        tokens=cut,
        documents=train.documents - val.documents + int(ends_mid_document),
        bytes=max(0, train.bytes - val.bytes),
    )
    return trained, val


def _open_written_shards(writer: ShardWriter, tokenizer: Tokenizer) -> TokenShards:
    shards = writer.close()
    manifest = {
        "dtype": writer.dtype.name,
        "vocab_size": tokenizer.vocab_size,
        "eos_id": _eos_id(tokenizer),
        "splits": {
            writer.split: {
                "tokens": writer.position,
                "bytes": 0,
                "documents": 0,
                "shards": [{"file": shard.file, "tokens": shard.tokens} for shard in shards],
            }
        },
    }
    return TokenShards(writer.directory, writer.split, manifest)


def _snap_to_document_boundary(shards: TokenShards, cut: int, eos_id: int, radius: int) -> int:
    """The document boundary (position just after an EOS) nearest to `cut` within `radius`, keeping
    at least MIN_SPLIT_TOKENS on each side; `cut` itself when there is none."""
    low = max(MIN_SPLIT_TOKENS, cut - radius)
    high = min(shards.num_tokens - MIN_SPLIT_TOKENS, cut + radius)
    if radius <= 0 or low > high:
        return cut
    window = shards.read(low - 1, high - low + 1)  # the tokens just before each candidate cut
    boundaries = np.flatnonzero(window == eos_id) + low
    if len(boundaries) == 0:
        return cut
    return int(boundaries[np.argmin(np.abs(boundaries - cut))])


class _Utf8ByteCounter:
    """The UTF-8 size of the text a token stream decodes to (EOS excluded), decoded a bounded chunk
    at a time and cut at EOS tokens so no character is split between two decode calls."""

    def __init__(
        self, tokenizer: Tokenizer, max_pending_tokens: int = 4 * COPY_CHUNK_TOKENS
    ) -> None:
        self.tokenizer = tokenizer
        self.eos_id = _eos_id(tokenizer)
        self.max_pending_tokens = max_pending_tokens
        self.pending: list[np.ndarray] = []
        self.pending_tokens = 0
        self.total = 0

    def add(self, tokens: np.ndarray) -> None:
        ends = np.flatnonzero(tokens == self.eos_id)
        if len(ends) == 0:
            self.pending.append(tokens)
            self.pending_tokens += len(tokens)
            if self.pending_tokens >= self.max_pending_tokens:
                self._decode_pending()  # a huge document: an approximate cut beats unbounded memory
            return
        last_end = int(ends[-1]) + 1
        self.pending.append(tokens[:last_end])
        self._decode_pending()
        if last_end < len(tokens):
            self.pending.append(tokens[last_end:])
            self.pending_tokens = len(tokens) - last_end

    def finish(self) -> int:
        self._decode_pending()
        return self.total

    def _decode_pending(self) -> None:
        if self.pending:
            ids = np.concatenate(self.pending).tolist()
            self.total += len(self.tokenizer.decode(ids, skip_special=True).encode("utf-8"))
        self.pending = []
        self.pending_tokens = 0


# --- the implicit path: `train --data X` -----------------------------------------------------------


def prepare_cached(
    source: str,
    tokenizer: Tokenizer,
    *,
    cache_root: Path | None = None,
    val_source: str | None = None,
    val_fraction: float = 0.1,
    text_field: str = "text",
    doc_separator: str | None = None,
    cleaning: CleaningOptions = CleaningOptions(),  # noqa: B008 (frozen, so a shared default is safe)
    num_workers: int | None = None,
    shard_max_tokens: int = DEFAULT_SHARD_MAX_TOKENS,
    progress: bool = True,
) -> Path:
    """A prepared dataset for `source`, prepared once and then reused from the cache.

    An already-prepared directory (holding manifest.json) is returned as it is. Otherwise the cache
    key covers the source's identity (path, size and mtime of local files; the URL or dataset name
    otherwise), the tokenizer fingerprint and every option that changes the tokens.
    Cache root: `cache_root`, else `$SCRATCHLM_CACHE`, else `~/.cache/scratchlm`.
    """
    candidate = Path(source).expanduser()
    if (candidate / MANIFEST_NAME).is_file():
        manifest = read_manifest(candidate)
        if manifest.get("tokenizer_fingerprint") != tokenizer.fingerprint():
            raise ScratchLMError(
                f"{candidate} was prepared with a different tokenizer; prepare it again with this "
                "one (`scratchlm data prepare`), pass the raw data instead, or train with the "
                "tokenizer it was prepared with"
            )
        return candidate
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    key_material = {
        "format_version": FORMAT_VERSION,
        "source": source_identity(source),
        "val_source": source_identity(val_source) if val_source is not None else None,
        "val_fraction": val_fraction,
        "text_field": text_field,
        "doc_separator": doc_separator,
        "cleaning": cleaning.to_dict(),
        "tokenizer": tokenizer.fingerprint(),
    }
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode("utf-8")).hexdigest()
    readable_name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source.rstrip("/\\")).name)[:40]
    directory = root / "datasets" / f"{readable_name or 'data'}-{key[:16]}"
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(directory.with_name(f".{directory.name}.lock")):
        if (directory / MANIFEST_NAME).is_file():
            return directory
        return prepare_dataset(
            source,
            directory,
            tokenizer,
            val_source=val_source,
            val_fraction=val_fraction,
            text_field=text_field,
            doc_separator=doc_separator,
            cleaning=cleaning,
            num_workers=num_workers,
            shard_max_tokens=shard_max_tokens,
            cache_dir=root,
            progress=progress,
        )
