"""Fine-tuning data as people have it: ShareGPT, JSON arrays, gzip, hf: datasets; one reader."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from scratchlm.chat_template import Message
from scratchlm.errors import ScratchLMError
from scratchlm.finetune import datasets, records

ALPACA = {"instruction": "Name a color.", "input": "", "output": "Red."}
ALPACA_WITH_INPUT = {"instruction": "Add them.", "input": "2 and 3", "output": "5"}
EXPECTED_ALPACA = [
    [Message(role="user", content="Name a color."), Message(role="assistant", content="Red.")],
    [
        Message(role="user", content="Add them.\n\n2 and 3"),
        Message(role="assistant", content="5"),
    ],
]
SHAREGPT = {
    "conversations": [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello!"},
        {"from": "human", "value": "Bye"},
        {"from": "gpt", "value": "Goodbye."},
    ]
}
OPENAI = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]
}


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_sharegpt_turns_equal_the_same_conversation_in_openai_shape(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mixed.jsonl", [SHAREGPT, OPENAI])
    sharegpt, openai = datasets.read_conversations(path)
    assert sharegpt == openai
    assert [message["role"] for message in sharegpt] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]


def test_alpaca_json_array_gzip_and_jsonl_read_alike(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [ALPACA, ALPACA_WITH_INPUT]
    array = tmp_path / "alpaca_data.json"
    array.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    lines = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    zipped = tmp_path / "alpaca.jsonl.gz"
    zipped.write_bytes(gzip.compress(lines.read_bytes()))
    zipped_array = tmp_path / "alpaca.json.gz"
    zipped_array.write_bytes(gzip.compress(array.read_bytes()))
    for path in (array, lines, zipped, zipped_array):
        assert datasets.is_sft_file(path), path
        assert datasets.read_conversations(path) == EXPECTED_ALPACA, path


def test_record_locations_name_the_line_or_the_array_index(tmp_path: Path) -> None:
    lines = tmp_path / "bad.jsonl"
    lines.write_text(json.dumps(ALPACA) + "\n\n" + '{"question": "x"}\n')
    with pytest.raises(ScratchLMError, match=r"bad\.jsonl:3: unknown record shape"):
        datasets.read_conversations(lines)
    array = tmp_path / "bad.json"
    array.write_text(json.dumps([ALPACA, {"conversations": [{"from": "robot", "value": "x"}]}]))
    with pytest.raises(ScratchLMError, match=r"bad\.json record 2: turn 0 is from 'robot'"):
        datasets.read_conversations(array)
    no_reply = tmp_path / "no_reply.jsonl"
    write_jsonl(no_reply, [{"conversations": [{"from": "human", "value": "Hi"}]}])
    with pytest.raises(ScratchLMError, match="no assistant message"):
        datasets.read_conversations(no_reply)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.json", "[{", r"broken\.json:1: not valid JSON"),
        ("object.json", '{"a": 1}', "expected a JSON array of objects, got a dict"),
        ("scalars.json", "[1, 2]", r"record 1: expected a JSON object"),
        ("empty.jsonl", "\n\n", "holds no records"),
        ("array.jsonl", json.dumps([ALPACA]), "a .json file holds one array"),
    ],
)
def test_malformed_files_are_one_line_errors(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ScratchLMError, match=message) as error:
        records.read_records(path)
    assert "\n" not in str(error.value)


def test_broken_gzip_and_non_utf8_files_say_what_is_wrong(tmp_path: Path) -> None:
    fake = tmp_path / "data.jsonl.gz"
    fake.write_text(json.dumps(ALPACA))  # not gzip at all
    assert datasets.is_sft_file(fake)  # meant as chat data: reading it says what is wrong
    with pytest.raises(ScratchLMError, match="cannot read it"):
        datasets.read_conversations(fake)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"prompt": "caf\xe9", "completion": "ok"}\n')
    with pytest.raises(ScratchLMError, match="is not UTF-8"):
        datasets.read_conversations(latin)


def test_text_jsonl_stays_pretraining_text_and_later_bad_lines_are_reported(
    tmp_path: Path,
) -> None:
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "Once upon a time."}])
    assert not datasets.is_sft_file(text)
    later_bad = tmp_path / "later_bad.jsonl"
    later_bad.write_text(json.dumps(ALPACA) + "\n{not json\n")
    assert datasets.is_sft_file(later_bad)  # the first record decides; line 2 is reported
    with pytest.raises(ScratchLMError, match=r"later_bad\.jsonl:2: not valid JSON"):
        datasets.read_conversations(later_bad)
    assert not datasets.is_sft_file(tmp_path / "missing.jsonl")


def test_hugging_face_chat_datasets_with_a_messages_column(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    folder = tmp_path / "chat_dataset"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [OPENAI, OPENAI])
    write_jsonl(folder / "validation.jsonl", [OPENAI])
    source = f"hf:{folder}"
    assert datasets.is_sft_file(source)
    train = datasets.read_conversations(source)
    [expected] = datasets.read_conversations(write_jsonl(tmp_path / "one.jsonl", [OPENAI]))
    assert train == [expected, expected]
    assert [where for where, _ in records.read_records(source, split="val")] == [
        f"{source} record 0"
    ]
    with pytest.raises(ScratchLMError, match="cannot load it"):
        records.read_records(f"hf:{tmp_path / 'absent'}")
    text_folder = tmp_path / "text_dataset"
    text_folder.mkdir()
    write_jsonl(text_folder / "train.jsonl", [{"text": "Once upon a time."}])
    assert not datasets.is_sft_file(f"hf:{text_folder}")  # continued pretraining text


@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[3] / "shared" / "data").is_dir(),
    reason="../shared/data is absent",
)
def test_the_shared_instruction_and_preference_files_read() -> None:
    shared = Path(__file__).resolve().parents[3] / "shared" / "data"
    conversations = datasets.read_conversations(shared / "sft_rasbt_instructions.jsonl")
    assert len(conversations) == 975
    # the preference file is an Alpaca-shaped JSON array (its output key is the SFT reply)
    preference = shared / "preference_rasbt.json"
    assert len(records.read_records(preference)) == 1100
    assert datasets.is_sft_file(preference)
