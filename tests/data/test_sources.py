"""Reading documents from every source kind, streaming long documents in bounded pieces."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scratchlm.data import sources
from scratchlm.data.sources import (
    SHORTCUTS,
    SplitNotFound,
    iter_documents,
    resolve_source,
    sample_text,
    source_identity,
)
from scratchlm.errors import ScratchLMError
from tests.data.helpers import STORIES, stories_text


def texts_of(source: str, **options: object) -> list[str]:
    return ["".join(document.pieces()) for document in iter_documents(source, **options)]  # type: ignore[arg-type]


def write_tar_gz(path: Path, members: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_txt_splits_on_end_of_text_lines(tmp_path: Path) -> None:
    path = tmp_path / "stories.txt"
    path.write_text(stories_text(STORIES[:3]))
    assert texts_of(str(path)) == [f"{story}\n" for story in STORIES[:3]]


def test_txt_without_separators_is_one_document(tmp_path: Path) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("First line.\n<|endoftext|> is only a separator on its own line.\n")
    assert texts_of(str(path)) == [path.read_text()]


def test_user_separator_splits_even_across_read_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "READ_CHUNK_BYTES", 7)
    path = tmp_path / "paragraphs.txt"
    path.write_text("one two three\n\nfour five\n\nsix seven eight nine\n\n")
    assert texts_of(str(path), doc_separator="\n\n") == [
        "one two three",
        "four five",
        "six seven eight nine",
    ]


def test_directory_reads_txt_files_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("second")
    (tmp_path / "a.txt").write_text(stories_text(["first", "also first"]))
    (tmp_path / "c.txt").write_text("")  # empty files in a directory are skipped
    (tmp_path / "notes.md").write_text("not text data")
    assert texts_of(str(tmp_path)) == ["first\n", "also first\n", "second"]


def test_jsonl_reads_the_text_field(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    records = [{"body": "alpha", "id": 1}, {"body": "beta", "id": 2}]
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n\n")
    assert texts_of(str(path), text_field="body") == ["alpha", "beta"]
    with pytest.raises(ScratchLMError, match=r"line 1 has no field 'text'.*--text-field"):
        texts_of(str(path))


def test_parquet_reads_the_text_column(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"content": ["one", None, "three"], "n": [1, 2, 3]}), path)
    assert texts_of(str(path), text_field="content") == ["one", "", "three"]
    with pytest.raises(ScratchLMError, match=r"no column 'text'.*content"):
        texts_of(str(path))
    with pytest.raises(ScratchLMError, match="not text"):
        texts_of(str(path), text_field="n")


def test_tar_gz_serves_train_and_test_members(tmp_path: Path) -> None:
    archive = write_tar_gz(
        tmp_path / "corpus.tar.gz",
        {"corpus/train.txt": stories_text(["t1", "t2"]), "corpus/test.txt": stories_text(["v1"])},
    )
    assert texts_of(str(archive)) == ["t1\n", "t2\n"]
    assert texts_of(str(archive), split="val") == ["v1\n"]
    only_train = write_tar_gz(tmp_path / "train_only.tgz", {"train.txt": "x"})
    with pytest.raises(SplitNotFound):
        iter_documents(str(only_train), split="val")
    no_train = write_tar_gz(tmp_path / "none.tar.gz", {"readme.txt": "x"})
    with pytest.raises(ScratchLMError, match=r"no train.txt \(it holds: readme.txt\)"):
        iter_documents(str(no_train))


def test_single_file_sources_have_no_validation_split(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("hello")
    with pytest.raises(SplitNotFound):
        iter_documents(str(path), split="val")


def test_hugging_face_datasets_stream_from_a_local_dataset_directory(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    (tmp_path / "train.jsonl").write_text('{"text": "hub one"}\n{"text": "hub two"}\n')
    (tmp_path / "validation.jsonl").write_text('{"text": "hub val"}\n')
    assert texts_of(f"hf:{tmp_path}") == ["hub one", "hub two"]
    assert texts_of(f"hf:{tmp_path}", split="val") == ["hub val"]
    with pytest.raises(ScratchLMError, match="no field 'body'"):
        texts_of(f"hf:{tmp_path}", text_field="body")


def test_shortcut_records_are_joined_into_articles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("datasets")
    lines = [
        " = Alpha = \n",
        "",
        " text a \n",
        " = = Section = = \n",
        " more a \n",
        " = Beta = \n",
        " b \n",
    ]
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps({"text": line}) + "\n" for line in lines)
    )
    monkeypatch.setitem(
        SHORTCUTS,
        "localwiki",
        {"kind": "hf", "location": str(tmp_path), "document_start_pattern": r"^ = [^=]"},
    )
    assert texts_of("localwiki") == [
        " = Alpha = \n text a \n = = Section = = \n more a \n",
        " = Beta = \n b \n",
    ]


def test_resolution_of_names_urls_and_paths(tmp_path: Path) -> None:
    assert resolve_source("shakespeare").kind == "url"
    assert "karpathy/char-rnn" in resolve_source("shakespeare").location
    assert resolve_source("tinystories").location == "roneneldan/TinyStories"
    assert resolve_source("wikitext2").config == "wikitext-2-raw-v1"
    fineweb = resolve_source("fineweb")
    assert (fineweb.location, fineweb.config) == ("HuggingFaceFW/fineweb-edu", "sample-10BT")
    assert resolve_source("hf:owner/name:config").config == "config"
    assert resolve_source("owner/dataset").kind == "hf"
    assert resolve_source("synthetic:3").location == "3"
    assert resolve_source("https://example.com/a/data.parquet").kind == "url"
    with pytest.raises(ScratchLMError, match="does not exist"):
        resolve_source(str(tmp_path / "missing" / "train.txt"))
    with pytest.raises(ScratchLMError, match="does not exist"):
        resolve_source("data/train.txt")  # looks like owner/name, but it is a missing file
    with pytest.raises(ScratchLMError, match="positive number of megabytes"):
        resolve_source("synthetic:lots")
    with pytest.raises(ScratchLMError, match="unsupported file type"):
        resolve_source("https://example.com/data.zip")


def test_source_identity_changes_when_a_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("one")
    before = source_identity(str(path))
    path.write_text("one two")
    assert source_identity(str(path)) != before
    assert source_identity("tinystories") == source_identity("tinystories")


def test_sample_text_stops_at_the_character_budget(tmp_path: Path) -> None:
    path = tmp_path / "stories.txt"
    path.write_text(stories_text())
    sampled = list(sample_text(str(path), max_chars=60))
    assert sum(len(text) for text in sampled) == 60
    assert sampled[0] == STORIES[0]


class _RecordingReader(io.BufferedReader):
    largest_read = 0

    def read(self, size: int | None = -1) -> bytes:
        assert size is not None and size > 0, "data files are never read whole"
        type(self).largest_read = max(type(self).largest_read, size)
        return super().read(size)


def test_a_long_document_streams_in_bounded_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "READ_CHUNK_BYTES", 64)
    monkeypatch.setattr(sources, "PIECE_CHARS", 200)

    def recording_open(path: Path) -> IO[bytes]:
        return _RecordingReader(io.FileIO(path, "rb"))

    monkeypatch.setattr(sources, "_open_binary", recording_open)
    long_story = " ".join(
        f"word{index}\n" if index % 7 == 0 else f"word{index}" for index in range(300)
    )
    path = tmp_path / "long.txt"
    path.write_text(stories_text(["short one", long_story, "short two"]))
    documents = list(iter_documents(str(path)))  # not consuming a streamed document skips it
    assert [document.is_streamed for document in documents] == [False, True, False]
    documents = iter_documents(str(path))
    first = next(documents)
    streamed = next(documents)
    pieces = list(streamed.pieces())
    assert len(pieces) > 5
    assert all(len(piece) <= 200 for piece in pieces)
    assert "".join(pieces) == long_story + "\n"
    assert first.text == "short one\n"
    assert [document.text for document in documents] == ["short two\n"]
    assert _RecordingReader.largest_read <= 64


def test_a_line_longer_than_a_read_chunk_is_cut_on_a_character_boundary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "READ_CHUNK_BYTES", 16)
    text = "日本語のテキスト" * 20 + "\n<|endoftext|>\nnext"
    path = tmp_path / "wide.txt"
    path.write_text(text)
    assert texts_of(str(path)) == ["日本語のテキスト" * 20 + "\n", "next"]


def test_bad_utf8_names_the_byte_offset_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"hello\ncaf\xe9\n")
    with pytest.raises(ScratchLMError, match=r"latin1.txt is not valid UTF-8.*offset 9.*iconv"):
        texts_of(str(path))
    jsonl = tmp_path / "latin1.jsonl"
    jsonl.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(ScratchLMError, match=r"line 2 is not valid UTF-8 \(byte offset 28\)"):
        texts_of(str(jsonl))


def test_missing_and_empty_files_are_user_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ScratchLMError, match=r"empty.txt is empty"):
        iter_documents(str(empty))
    no_text = tmp_path / "no_text"
    no_text.mkdir()
    with pytest.raises(ScratchLMError, match=r"holds no .txt files"):
        iter_documents(str(no_text))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(ScratchLMError, match="line 2 is not valid JSON"):
        texts_of(str(bad_json))
