from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratchlm.chat.conversation import Conversation
from scratchlm.chat_template import Message, render
from scratchlm.errors import ScratchLMError
from scratchlm.tokenizer import Tokenizer


def conversation_with_turns(turns: int, system: str | None = "Be kind.") -> Conversation:
    conversation = Conversation(system=system, settings={"temperature": 0.5})
    for index in range(turns):
        conversation.add("user", f"question {index}: where did the red ball go?")
        conversation.add("assistant", f"answer {index}: it rolled into the garden.")
    return conversation


def rendered_length(messages: list[Message], tokenizer: Tokenizer) -> int:
    return len(render(messages, tokenizer, add_generation_prompt=True)[0])


def test_json_round_trip(tmp_path: Path) -> None:
    conversation = conversation_with_turns(2)
    data = json.loads(json.dumps(conversation.to_json()))
    assert data["version"] == 1 and data["system"] == "Be kind."
    assert data["settings"] == {"temperature": 0.5}
    assert Conversation.from_json(data) == conversation
    conversation.save(tmp_path / "deep" / "chat.json")
    assert Conversation.load(tmp_path / "deep" / "chat.json") == conversation
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["chat.json"]  # no temporary left


def test_from_json_accepts_a_leading_system_message() -> None:
    data = {
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "hi"},
        ]
    }
    conversation = Conversation.from_json(data)
    assert conversation.system == "Be kind."
    assert conversation.messages == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "not a JSON object"),
        ({"version": 2, "messages": []}, "version 2"),
        ({"messages": "hi"}, "'messages' must be a list"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role 'tool'"),
        ({"messages": [{"role": "user"}]}, "string 'content'"),
        ({"messages": [], "system": 3}, "'system' must be a string"),
        ({"messages": [], "settings": [1]}, "'settings' must be an object"),
    ],
)
def test_from_json_rejects_bad_files(data: object, message: str) -> None:
    with pytest.raises(ScratchLMError, match=message):
        Conversation.from_json(data)


def test_load_reports_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ScratchLMError, match="does not exist"):
        Conversation.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ScratchLMError, match="not valid JSON"):
        Conversation.load(tmp_path / "bad.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ScratchLMError, match="cannot read"):
        Conversation.load(tmp_path / "binary.json")


def test_prompt_tokens_match_the_chat_template(bpe_tokenizer: Tokenizer) -> None:
    conversation = conversation_with_turns(2)
    conversation.add("user", "and then?")
    expected = rendered_length(conversation.template_messages(), bpe_tokenizer)
    assert conversation.prompt_tokens(bpe_tokenizer) == expected


def test_fit_drops_the_oldest_turns_and_keeps_the_system_prompt(
    bpe_tokenizer: Tokenizer,
) -> None:
    conversation = conversation_with_turns(4)
    conversation.add("user", "and then?")
    original = list(conversation.messages)
    full = conversation.prompt_tokens(bpe_tokenizer)
    # Room for everything: nothing changes.
    assert conversation.fit(bpe_tokenizer, full + 10, 10) == []
    # One token short: exactly the oldest turn (user + assistant) goes.
    dropped = conversation.fit(bpe_tokenizer, full + 9, 10)
    assert len(dropped) == 1 and dropped[0].messages == original[:2]
    assert dropped[0].tokens == full - conversation.prompt_tokens(bpe_tokenizer)
    assert conversation.messages == original[2:] and conversation.system == "Be kind."
    # A tight context drops every old turn but never the newest message or the system prompt.
    dropped = conversation.fit(bpe_tokenizer, 10, 5)
    assert len(dropped) == 3
    assert conversation.messages == [{"role": "user", "content": "and then?"}]
    assert conversation.system == "Be kind."


def test_fit_treats_messages_before_the_first_user_message_as_part_of_the_first_turn(
    bpe_tokenizer: Tokenizer,
) -> None:
    conversation = Conversation(system=None)
    conversation.add("assistant", "Hello! Ask me anything.")
    conversation.add("user", "first")
    conversation.add("assistant", "reply")
    conversation.add("user", "second")
    assert conversation.turn_starts() == [0, 3]
    dropped = conversation.fit(bpe_tokenizer, conversation.prompt_tokens(bpe_tokenizer), 1)
    assert [len(turn.messages) for turn in dropped] == [3]
    assert conversation.messages == [{"role": "user", "content": "second"}]


def test_fit_uses_the_callers_encoding(bpe_tokenizer: Tokenizer) -> None:
    conversation = conversation_with_turns(2, system=None)
    conversation.add("user", "x")

    def ten_tokens(message: Message) -> list[int]:
        return [0] * 10

    # 5 messages x 10 + the generation prompt = 51; a 45-token context with 4 of room keeps 3.
    dropped = conversation.fit(bpe_tokenizer, 45, 4, encode_message=ten_tokens)
    assert [turn.tokens for turn in dropped] == [20]
    assert len(conversation.messages) == 3


def test_clear_keeps_the_system_prompt_and_add_checks_roles() -> None:
    conversation = conversation_with_turns(1)
    conversation.clear()
    assert conversation.messages == [] and conversation.system == "Be kind."
    with pytest.raises(ScratchLMError, match="user or assistant"):
        conversation.add("system", "no")
