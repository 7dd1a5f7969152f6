"""prepare_dataset / prepare_cached: every input format into token shards with a manifest."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scratchlm.data import prepare as prepare_module
from scratchlm.data import sources
from scratchlm.data.cleaning import CleaningOptions, clean_text
from scratchlm.data.prepare import prepare_cached, prepare_dataset
from scratchlm.data.shards import MANIFEST_NAME, TokenShards, read_manifest
from scratchlm.errors import ScratchLMError
from scratchlm.tokenizer import Tokenizer, train_char
from tests.data.helpers import STORIES, documents_of, split_tokens, stories_text

NO_VAL = {"val_fraction": 0.0, "num_workers": 0, "progress": False}
NO_VAL_WORKERS = {"val_fraction": 0.0, "progress": False}


def prepare(source: Path | str, out: Path, tokenizer: Tokenizer, **options: object) -> Path:
    settings: dict[str, object] = {"num_workers": 0, "progress": False, **options}
    return prepare_dataset(str(source), out, tokenizer, **settings)  # type: ignore[arg-type]


def decoded_documents(directory: Path, split: str, tokenizer: Tokenizer) -> list[str]:
    tokens = split_tokens(directory, split)
    return [tokenizer.decode(document) for document in documents_of(tokens, tokenizer.eos_id)]


def write_stories(path: Path, stories: list[str] = STORIES) -> Path:
    path.write_text(stories_text(stories))
    return path


def test_txt_every_document_ends_with_eos_and_the_manifest_describes_it(
    tmp_path: Path, alphabet_tokenizer: Tokenizer
) -> None:
    source = write_stories(tmp_path / "stories.txt")
    out = prepare(source, tmp_path / "out", alphabet_tokenizer, **NO_VAL)
    assert decoded_documents(out, "train", alphabet_tokenizer) == STORIES
    manifest = read_manifest(out)
    train = manifest["splits"]["train"]
    assert train["documents"] == len(STORIES)
    assert train["bytes"] == sum(len(story.encode()) for story in STORIES)
    assert train["tokens"] == sum(len(story) for story in STORIES) + len(STORIES)
    assert manifest["dtype"] == "uint16"
    assert manifest["eos_id"] == alphabet_tokenizer.eos_id
    assert manifest["tokenizer_fingerprint"] == alphabet_tokenizer.fingerprint()
    assert manifest["cleaning"]["counts"]["train"]["kept"] == len(STORIES)
    assert "val" not in manifest["splits"]
    assert sorted(path.name for path in out.iterdir()) == [MANIFEST_NAME, "train_000000.bin"]


def test_validation_is_the_last_fraction_snapped_to_a_document_boundary(
    tmp_path: Path, alphabet_tokenizer: Tokenizer
) -> None:
    stories = [f"Story number {index} is here." for index in range(40)]
    source = write_stories(tmp_path / "stories.txt", stories)
    out = prepare(source, tmp_path / "out", alphabet_tokenizer, val_fraction=0.1)
    train_docs = decoded_documents(out, "train", alphabet_tokenizer)
    val_docs = decoded_documents(out, "val", alphabet_tokenizer)
    assert train_docs + val_docs == stories  # whole documents on both sides, in order
    assert len(val_docs) == 4
    manifest = read_manifest(out)
    assert manifest["validation"] == "last 0.1 of train"
    val = manifest["splits"]["val"]
    assert val["documents"] == 4
    assert val["bytes"] == sum(len(story) for story in stories[-4:])
    assert manifest["splits"]["train"]["bytes"] == sum(len(story) for story in stories[:-4])


def test_validation_bytes_count_utf8_of_the_carved_documents(
    tmp_path: Path, small_bpe_tokenizer: Tokenizer
) -> None:
    stories = [f"Caf\u00e9 story {index} \u65e5\u672c \u2014 the end." for index in range(30)]
    source = write_stories(tmp_path / "stories.txt", stories)
    out = prepare(source, tmp_path / "out", small_bpe_tokenizer, val_fraction=0.2)
    val_docs = decoded_documents(out, "val", small_bpe_tokenizer)
    assert val_docs == stories[-len(val_docs) :]
    manifest = read_manifest(out)
    assert manifest["splits"]["val"]["bytes"] == sum(len(doc.encode()) for doc in val_docs)
    total_bytes = sum(len(story.encode()) for story in stories)
    assert manifest["splits"]["train"]["bytes"] + manifest["splits"]["val"]["bytes"] == total_bytes


def test_one_document_corpus_is_cut_mid_text_like_nanogpt(
    tmp_path: Path, alphabet_tokenizer: Tokenizer
) -> None:
    text = "To be, or not to be, that is the question.\n" * 30
    source = tmp_path / "play.txt"
    source.write_text(text)
    out = prepare(source, tmp_path / "out", alphabet_tokenizer, val_fraction=0.1)
    train = split_tokens(out, "train")
    val = split_tokens(out, "val")
    expected = alphabet_tokenizer.encode(clean_text(text, CleaningOptions()))
    assert train + val == [*expected, alphabet_tokenizer.eos_id]
    total = len(expected) + 1
    assert len(train) == int(total * 0.9)
    manifest = read_manifest(out)
    assert manifest["splits"]["train"]["documents"] == 1
    assert manifest["splits"]["val"]["documents"] == 1
    assert manifest["splits"]["val"]["bytes"] == len(val) - 1


def test_explicit_validation_source(tmp_path: Path, alphabet_tokenizer: Tokenizer) -> None:
    train_source = write_stories(tmp_path / "train.txt", STORIES[:6])
    val_source = write_stories(tmp_path / "valid.txt", STORIES[6:])
    out = prepare(train_source, tmp_path / "out", alphabet_tokenizer, val_source=str(val_source))
    assert decoded_documents(out, "train", alphabet_tokenizer) == STORIES[:6]
    assert decoded_documents(out, "val", alphabet_tokenizer) == STORIES[6:]
    manifest = read_manifest(out)
    assert manifest["validation"] == "val_source"
    assert manifest["cleaning"]["counts"]["val"]["kept"] == 2


def test_tar_gz_uses_its_test_txt_for_validation(
    tmp_path: Path, alphabet_tokenizer: Tokenizer
) -> None:
    archive = tmp_path / "corpus.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, stories in (("train.txt", STORIES[:5]), ("test.txt", STORIES[5:])):
            data = stories_text(stories).encode()
            info = tarfile.TarInfo(f"corpus/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = prepare(archive, tmp_path / "out", alphabet_tokenizer)
    assert decoded_documents(out, "train", alphabet_tokenizer) == STORIES[:5]
    assert decoded_documents(out, "val", alphabet_tokenizer) == STORIES[5:]
    assert read_manifest(out)["validation"] == "source_split"


def test_directory_jsonl_and_parquet_sources(tmp_path: Path, alphabet_tokenizer: Tokenizer) -> None:
    directory = tmp_path / "texts"
    (directory / "nested").mkdir(parents=True)
    (directory / "a.txt").write_text("Alpha text.")
    (directory / "nested" / "b.txt").write_text(stories_text(["Beta one.", "Beta two."]))
    out = prepare(directory, tmp_path / "dir_out", alphabet_tokenizer, **NO_VAL)
    assert decoded_documents(out, "train", alphabet_tokenizer) == [
        "Alpha text.",
        "Beta one.",
        "Beta two.",
    ]

    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("".join(json.dumps({"story": story}) + "\n" for story in STORIES))
    out = prepare(jsonl, tmp_path / "jsonl_out", alphabet_tokenizer, text_field="story", **NO_VAL)
    assert decoded_documents(out, "train", alphabet_tokenizer) == STORIES

    parquet = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": STORIES}), parquet, row_group_size=3)
    out = prepare(parquet, tmp_path / "parquet_out", alphabet_tokenizer, **NO_VAL)
    assert decoded_documents(out, "train", alphabet_tokenizer) == STORIES


def test_hugging_face_dataset_with_its_validation_split(
    tmp_path: Path, small_bpe_tokenizer: Tokenizer
) -> None:
    pytest.importorskip("datasets")
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "train.jsonl").write_text(
        "".join(json.dumps({"text": s}) + "\n" for s in STORIES[:6])
    )
    (dataset / "validation.jsonl").write_text(
        "".join(json.dumps({"text": s}) + "\n" for s in STORIES[6:])
    )
    out = prepare(f"hf:{dataset}", tmp_path / "out", small_bpe_tokenizer)
    assert decoded_documents(out, "train", small_bpe_tokenizer) == STORIES[:6]
    assert decoded_documents(out, "val", small_bpe_tokenizer) == STORIES[6:]
    assert read_manifest(out)["validation"] == "source_split"


def test_synthetic_corpus_is_generated_once_into_the_cache(
    tmp_path: Path, cache_dir: Path, alphabet_tokenizer: Tokenizer
) -> None:
    tokenizer = train_char(sources.sample_text("synthetic:0.05", max_chars=200_000))
    out = prepare("synthetic:0.05", tmp_path / "out", tokenizer)
    manifest = read_manifest(out)
    assert manifest["splits"]["train"]["documents"] > 10
    assert manifest["splits"]["val"]["tokens"] > 0
    assert len(list((cache_dir / "synthetic").glob("*.txt"))) == 1


def test_vocabularies_over_65535_use_uint32(tmp_path: Path) -> None:
    codes = [code for code in range(0x4E00, 0x4E00 + 70_000) if not 0xD800 <= code <= 0xDFFF]
    characters = "".join(map(chr, codes))
    tokenizer = train_char([characters])
    assert tokenizer.vocab_size > 65535
    source = tmp_path / "wide.txt"
    text = characters[-50:] + " " + characters[:50]
    source.write_text(text)
    out = prepare(source, tmp_path / "out", tokenizer, **NO_VAL)
    shards = TokenShards.open(out, "train")
    assert shards.dtype == np.dtype("<u4")
    assert (out / "train_000000.bin").stat().st_size == 4 * shards.num_tokens
    expected = tokenizer.encode(clean_text(text, CleaningOptions()))
    assert split_tokens(out, "train") == [*expected, tokenizer.eos_id]
    assert max(expected) > 65535


def test_shards_roll_over_and_reads_cross_their_boundaries(
    tmp_path: Path, alphabet_tokenizer: Tokenizer
) -> None:
    source = write_stories(tmp_path / "stories.txt")
    out = prepare(source, tmp_path / "out", alphabet_tokenizer, shard_max_tokens=50, **NO_VAL)
    tokens = split_tokens(out, "train")
    manifest = read_manifest(out)
    shards = manifest["splits"]["train"]["shards"]
    assert len(shards) == -(-len(tokens) // 50)
    assert all(shard["tokens"] == 50 for shard in shards[:-1])
    reader = TokenShards.open(out, "train")
    assert reader.read(45, 60).tolist() == tokens[45:105]


def test_cleaning_counts_land_in_the_manifest(
    tmp_path: Path, alphabet_tokenizer: Tokenizer
) -> None:
    stories = [
        "Same story.",
        "Same  story.  ",
        "",
        "tiny",
        "Caf\u00e9 \u65e5\u672c ok",
        "Another story.",
    ]
    source = write_stories(tmp_path / "stories.txt", stories)
    options = CleaningOptions(ascii_only=True, min_chars=5)
    out = prepare(source, tmp_path / "out", alphabet_tokenizer, cleaning=options, **NO_VAL)
    assert decoded_documents(out, "train", alphabet_tokenizer) == [
        "Same story.",
        "Caf ok",
        "Another story.",
    ]
    counts = read_manifest(out)["cleaning"]["counts"]["train"]
    assert counts == {
        "documents_seen": 6,
        "kept": 3,
        "dropped_empty": 1,
        "dropped_short": 1,
        "dropped_duplicate": 1,
        "dropped_non_ascii_chars": 3,
    }
    assert read_manifest(out)["cleaning"]["options"]["min_chars"] == 5


@pytest.mark.parametrize("tokenizer_name", ["alphabet_tokenizer", "small_bpe_tokenizer"])
def test_a_file_larger_than_the_piece_size_gives_the_same_tokens_as_the_whole_text(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tokenizer_name: str,
) -> None:
    tokenizer: Tokenizer = request.getfixturevalue(tokenizer_name)
    monkeypatch.setattr(sources, "READ_CHUNK_BYTES", 97)
    monkeypatch.setattr(sources, "PIECE_CHARS", 300)
    read_sizes: list[int] = []

    class RecordingFile(io.FileIO):
        def read(self, size: int = -1) -> bytes:
            read_sizes.append(size)
            return super().read(size)

    monkeypatch.setattr(sources, "_open_binary", lambda path: RecordingFile(path, "rb"))
    lines = [
        f"  Line {index}:\tthe  cat\u2019s  caf\u00e9 said {index * 7}!  "
        + ("\n\n\n" if index % 5 == 0 else "\r\n")
        for index in range(120)
    ]
    text = "".join(lines)
    source = tmp_path / "one_document.txt"
    source.write_text(text, newline="")
    assert len(text) > 10 * 300
    for options in (
        CleaningOptions(),
        CleaningOptions(unicode_normalization="NFKC", ascii_only=True),
    ):
        out = prepare(source, tmp_path / "out", tokenizer, cleaning=options, **NO_VAL)
        expected = [*tokenizer.encode(clean_text(text, options)), tokenizer.eos_id]
        assert split_tokens(out, "train") == expected
        assert read_manifest(out)["splits"]["train"]["bytes"] == len(
            clean_text(text, options).encode()
        )
    assert read_sizes and max(read_sizes) <= 97 and min(read_sizes) > 0


def test_duplicate_streamed_documents_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alphabet_tokenizer: Tokenizer
) -> None:
    monkeypatch.setattr(sources, "READ_CHUNK_BYTES", 64)
    monkeypatch.setattr(sources, "PIECE_CHARS", 100)
    long_story = " ".join(f"word {index}." for index in range(100))
    source = write_stories(tmp_path / "stories.txt", [long_story, "short", long_story, "end"])
    out = prepare(source, tmp_path / "out", alphabet_tokenizer, **NO_VAL)
    assert decoded_documents(out, "train", alphabet_tokenizer) == [long_story, "short", "end"]
    assert read_manifest(out)["cleaning"]["counts"]["train"]["dropped_duplicate"] == 1


def test_worker_processes_give_the_same_shards_as_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_bpe_tokenizer: Tokenizer
) -> None:
    monkeypatch.setattr(prepare_module, "BATCH_CHARS", 200)
    monkeypatch.setattr(prepare_module, "IN_PROCESS_MAX_BATCHES", 1)
    stories = [f"{story} Number {index}." for index in range(12) for story in STORIES]
    source = write_stories(tmp_path / "stories.txt", stories)
    pools_started: list[int] = []
    real_get_executor = prepare_module._BatchRunner._get_executor

    def spying_get_executor(runner: prepare_module._BatchRunner) -> object:
        pools_started.append(runner.num_workers)
        return real_get_executor(runner)

    monkeypatch.setattr(prepare_module._BatchRunner, "_get_executor", spying_get_executor)
    local = prepare(source, tmp_path / "local", small_bpe_tokenizer, num_workers=0)
    assert pools_started == []
    pooled = prepare(source, tmp_path / "pooled", small_bpe_tokenizer, num_workers=2)
    assert pools_started and set(pools_started) == {2}
    for split in ("train", "val"):
        assert split_tokens(pooled, split) == split_tokens(local, split)
    assert (
        read_manifest(pooled)["splits"]["train"]["documents"]
        == read_manifest(local)["splits"]["train"]["documents"]
    )


def test_prepare_replaces_a_prepared_directory_but_never_other_data(
    tmp_path: Path, alphabet_tokenizer: Tokenizer
) -> None:
    source = write_stories(tmp_path / "stories.txt")
    out = prepare(source, tmp_path / "out", alphabet_tokenizer, **NO_VAL)
    source.write_text(stories_text(STORIES[:2]))
    prepare(source, out, alphabet_tokenizer, **NO_VAL)
    assert read_manifest(out)["splits"]["train"]["documents"] == 2
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ScratchLMError, match="not a prepared dataset"):
        prepare(source, precious, alphabet_tokenizer, **NO_VAL)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_prepare_cached_reuses_and_invalidates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alphabet_tokenizer: Tokenizer
) -> None:
    source = write_stories(tmp_path / "stories.txt")
    cache_root = tmp_path / "cache"
    first = prepare_cached(
        str(source), alphabet_tokenizer, cache_root=cache_root, num_workers=0, progress=False
    )
    assert first.parent == cache_root / "datasets"
    calls: list[str] = []
    real_prepare = prepare_module.prepare_dataset

    def counting_prepare(*args: object, **kwargs: object) -> Path:
        calls.append(str(args[0]))
        return real_prepare(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(prepare_module, "prepare_dataset", counting_prepare)
    again = prepare_cached(
        str(source), alphabet_tokenizer, cache_root=cache_root, num_workers=0, progress=False
    )
    assert again == first and calls == []
    other_options = prepare_cached(
        str(source),
        alphabet_tokenizer,
        cache_root=cache_root,
        val_fraction=0.25,
        num_workers=0,
        progress=False,
    )
    assert other_options != first and len(calls) == 1
    source.write_text(stories_text([*STORIES, "A brand new story."]))
    changed = prepare_cached(
        str(source), alphabet_tokenizer, cache_root=cache_root, num_workers=0, progress=False
    )
    assert changed not in (first, other_options) and len(calls) == 2
    # An already-prepared directory is used as it is.
    assert prepare_cached(str(first), alphabet_tokenizer, cache_root=cache_root) == first
    other_tokenizer = train_char(["abc"])
    with pytest.raises(ScratchLMError, match="different tokenizer"):
        prepare_cached(str(first), other_tokenizer, cache_root=cache_root)


def test_token_shards_open_checks_the_manifest(
    tmp_path: Path, alphabet_tokenizer: Tokenizer
) -> None:
    with pytest.raises(ScratchLMError, match="prepare it with `scratchlm data prepare"):
        TokenShards.open(tmp_path, "train")
    source = write_stories(tmp_path / "stories.txt")
    out = prepare(source, tmp_path / "out", alphabet_tokenizer, **NO_VAL)
    with pytest.raises(ScratchLMError, match="no 'val' split"):
        TokenShards.open(out, "val")
    with pytest.raises(ScratchLMError, match="different tokenizer"):
        TokenShards.open(out, "train", tokenizer_fingerprint="0" * 64)
    with pytest.raises(ScratchLMError, match="vocabulary has 10"):
        TokenShards.open(out, "train", vocab_size=10)
    with open(out / "train_000000.bin", "ab") as handle:
        handle.write(b"\0\0")
    with pytest.raises(ScratchLMError, match="damaged"):
        TokenShards.open(out, "train")


class _TokenizerThatWorkersCannotLoad(Tokenizer):
    def to_json(self) -> str:
        return "this is not a tokenizer"


def test_a_dead_worker_pool_is_an_error_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alphabet_tokenizer: Tokenizer
) -> None:
    monkeypatch.setattr(prepare_module, "BATCH_CHARS", 100)
    monkeypatch.setattr(prepare_module, "IN_PROCESS_MAX_BATCHES", 1)
    broken = _TokenizerThatWorkersCannotLoad(alphabet_tokenizer.backend, "char")
    source = write_stories(tmp_path / "stories.txt")
    with pytest.raises(ScratchLMError, match="worker process died"):
        prepare(source, tmp_path / "out", broken, num_workers=1, **NO_VAL_WORKERS)
    assert not (tmp_path / "out").exists()
