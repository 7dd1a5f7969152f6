"""The chat template as every runtime renders it: transformers, llama.cpp with and without Jinja
(through llama-cpp-python), Ollama's Go template, each equal to `chat_template.render` token for
token; and models fine-tuned with template v1 keep rendering, exporting and chatting in v1."""

from __future__ import annotations

import ctypes
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from scratchlm.chat_template import (
    CHAT_TEMPLATE_VERSION,
    JINJA_TEMPLATE,
    JINJA_TEMPLATES,
    Message,
    render,
    render_text,
)
from scratchlm.checkpoint import chat_template_version, load_checkpoint, save_checkpoint
from scratchlm.errors import ScratchLMError
from scratchlm.export.gguf import export_gguf
from scratchlm.export.hf import export_hf, import_hf
from scratchlm.export.ollama import OLLAMA_TEMPLATE, export_ollama, ollama_template
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config

pytest.importorskip("gguf")

# system, two user turns, one assistant turn: once waiting for the reply, once closed by the
# assistant (what fine-tuning data looks like). Contents avoid control-token spellings: runtimes
# parse those in rendered text, which is why `render` encodes contents apart.
PROMPTED: list[Message] = [
    {"role": "system", "content": "You tell short stories."},
    {"role": "user", "content": "Tell me a story about a cat 😀\nwith two lines."},
    {"role": "assistant", "content": "Once upon a time, a cat found a ball.\nThe end."},
    {"role": "user", "content": "And then? 中文 café"},
]
CLOSED: list[Message] = [*PROMPTED[:3]]
CASES = {"prompted": (PROMPTED, True), "closed": (CLOSED, False)}


# --- a small Go text/template interpreter -----------------------------------------------------------
# Ollama renders the Modelfile TEMPLATE with Go's text/template. This implements the part of its
# semantics our template uses (and fails on anything else): text; actions `{{ }}` with `{{- ` and
# ` -}}` trimming all adjacent whitespace; `range PIPE` ... `end` (dot becomes each element, a new
# variable scope); `if PIPE` ... `end`; `$x := PIPE` declares in the current scope, `$x = PIPE`
# assigns the nearest declared `$x`; pipelines `.Field`, `$x`, `"string"`, `eq A B`, `ne A B`.
@dataclass
class _Node:
    kind: str  # "text", "output", "declare", "assign", "range", "if"
    value: str
    body: list[_Node]


_ACTION = re.compile(r"\{\{(- )?(.*?)( -)?\}\}", re.S)
_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s]+')


def _parse(template: str) -> list[_Node]:
    pieces: list[tuple[str, str]] = []
    position = 0
    for match in _ACTION.finditer(template):
        text = template[position : match.start()]
        if match.group(1):
            text = text.rstrip(" \t\r\n")
        pieces.append(("text", text))
        pieces.append(("action", match.group(2).strip()))
        position = match.end()
        if match.group(3):
            rest = template[position:]
            position += len(rest) - len(rest.lstrip(" \t\r\n"))
    pieces.append(("text", template[position:]))
    root: list[_Node] = []
    stack = [root]
    for kind, value in pieces:
        if kind == "text":
            if value:
                stack[-1].append(_Node("text", value, []))
        elif value == "end":
            stack.pop()
            assert stack, "an {{ end }} without its range or if"
        elif value.startswith(("range ", "if ")):
            word, _, pipeline = value.partition(" ")
            node = _Node(word, pipeline, [])
            stack[-1].append(node)
            stack.append(node.body)
        elif re.fullmatch(r"\$\w+ :?= .+", value):
            name, operator, pipeline = value.split(" ", 2)
            kind = "declare" if operator == ":=" else "assign"
            stack[-1].append(_Node(kind, name, [_Node("output", pipeline, [])]))
        else:
            stack[-1].append(_Node("output", value, []))
    assert len(stack) == 1, "a range or if without its {{ end }}"
    return root


def _evaluate(pipeline: str, dot: Any, scopes: list[dict[str, Any]]) -> Any:
    words = _WORD.findall(pipeline)

    def value(word: str) -> Any:
        if word.startswith('"'):
            return json.loads(word)
        if word.startswith("$"):
            for scope in reversed(scopes):
                if word in scope:
                    return scope[word]
            raise AssertionError(f"undefined variable {word}")
        assert word.startswith("."), f"unsupported word {word!r} in {pipeline!r}"
        return dot[word[1:]]

    if words[0] in ("eq", "ne"):
        assert len(words) == 3, pipeline
        equal = value(words[1]) == value(words[2])
        return equal if words[0] == "eq" else not equal
    assert len(words) == 1, f"unsupported pipeline {pipeline!r}"
    return value(words[0])


def _execute(nodes: list[_Node], dot: Any, scopes: list[dict[str, Any]]) -> Iterator[str]:
    for node in nodes:
        if node.kind == "text":
            yield node.value
        elif node.kind == "output":
            yield str(_evaluate(node.value, dot, scopes))
        elif node.kind == "declare":
            scopes[-1][node.value] = _evaluate(node.body[0].value, dot, scopes)
        elif node.kind == "assign":
            scope = next(scope for scope in reversed(scopes) if node.value in scope)
            scope[node.value] = _evaluate(node.body[0].value, dot, scopes)
        elif node.kind == "range":
            for element in _evaluate(node.value, dot, scopes):
                yield from _execute(node.body, element, [*scopes, {}])
        else:
            assert node.kind == "if"
            if _evaluate(node.value, dot, scopes):
                yield from _execute(node.body, dot, [*scopes, {}])


def render_go_template(template: str, messages: list[Message]) -> str:
    """`template` rendered as Ollama does for a chat: `.Messages` with `.Role` and `.Content`."""
    data = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
    return "".join(_execute(_parse(template), data, [{}]))


def test_go_interpreter_follows_go_semantics() -> None:
    # Expected outputs as Go's text/template gives them for these templates.
    data: list[Message] = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert render_go_template("x \n {{- range .Messages }}[{{ .Role }}]{{ end }}", data) == (
        "x[user][assistant]"
    )
    assert render_go_template("{{ range .Messages }} {{- .Content -}} \n{{ end }}!", data) == "ab!"
    last = '{{ $r := "" }}{{ range .Messages }}{{ $r = .Role }}{{ end }}{{ $r }}'
    assert render_go_template(last, data) == "assistant"
    # `:=` inside range declares a new variable that dies with the iteration
    shadow = '{{ $r := "x" }}{{ range .Messages }}{{ $r := .Role }}{{ end }}{{ $r }}'
    assert render_go_template(shadow, data) == "x"
    assert (
        render_go_template('{{ if ne "a" "b" }}yes{{ end }}{{ if eq "a" "b" }}no{{ end }}', data)
        == "yes"
    )
    with pytest.raises(AssertionError):
        render_go_template("{{ len .Messages }}", data)


# --- the exported model -----------------------------------------------------------------------------
def _chat_checkpoint(directory: Path, tokenizer: Tokenizer, version: int | None) -> Path:
    """A tiny random checkpoint; with `version`, recorded as a chat fine-tune of that template."""
    torch.manual_seed(0)
    config = tiny_config("llama-15m", vocab_size=tokenizer.vocab_size, context_length=128)
    if version is None:
        return save_checkpoint(directory, build_model(config), tokenizer)
    tuned = Tokenizer.from_json(tokenizer.to_json())  # the session fixture stays untouched
    tuned.chat_template_version = version
    finetune = {"base": "base", "data": "chat.jsonl", "supervised": True, "lora": None}
    return save_checkpoint(
        directory, build_model(config), tuned, extra_metadata={"finetune": finetune}
    )


@dataclass
class Exported:
    checkpoint: Path
    hf_tokenizer: Any
    llm: Any  # llama_cpp.Llama on the f32 GGUF


def _export(directory: Path, checkpoint: Path) -> Exported:
    transformers = pytest.importorskip("transformers")
    llama_cpp = pytest.importorskip("llama_cpp")
    export_hf(str(checkpoint), directory / "hf")
    gguf_path = export_gguf(checkpoint, directory / "model.gguf", dtype="f32")
    return Exported(
        checkpoint,
        transformers.AutoTokenizer.from_pretrained(directory / "hf", local_files_only=True),
        llama_cpp.Llama(model_path=str(gguf_path), n_ctx=256, verbose=False),
    )


@pytest.fixture(scope="module")
def v2_model(tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer: Tokenizer) -> Exported:
    directory = tmp_path_factory.mktemp("v2")
    return _export(directory, _chat_checkpoint(directory / "ckpt", bpe_tokenizer, 2))


def transformers_ids(hf_tokenizer: Any, messages: list[Message], prompt: bool) -> list[int]:
    ids = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def llama_cpp_builtin_text(template: str, messages: list[Message], prompt: bool) -> str:
    """llama.cpp's non-Jinja renderer (`llama_chat_apply_template`, as llama-cli and servers
    without --jinja use it): it matches the template text against the formats it knows."""
    import llama_cpp

    chat = (llama_cpp.llama_chat_message * len(messages))()
    encoded = [(m["role"].encode(), m["content"].encode()) for m in messages]
    for index, (role, content) in enumerate(encoded):
        chat[index].role, chat[index].content = role, content
    size = 4096
    buffer = ctypes.create_string_buffer(size)
    length = llama_cpp.llama_chat_apply_template(
        template.encode(), chat, len(messages), prompt, buffer, size
    )
    assert 0 < length <= size, f"llama.cpp does not recognise the template ({length})"
    return buffer.raw[:length].decode("utf-8")


def llama_cpp_tokenize(llm: Any, text: str) -> list[int]:
    # add_bos as llama-cli passes it for a first turn; the GGUF says not to add one.
    return list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))


def jinja_ids(llm: Any, messages: list[Message], prompt: bool) -> list[int]:
    """llama-cpp-python's Jinja path, built as `Llama` builds it from the GGUF metadata."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token="<|endoftext|>",
        bos_token="<|bos|>",
        add_generation_prompt=prompt,
    )
    response = formatter(messages=messages)  # type: ignore[arg-type]
    # What the chat handler does with the response.
    return list(
        llm.tokenize(
            response.prompt.encode("utf-8"), add_bos=not response.added_special, special=True
        )
    )


@pytest.mark.parametrize("case", list(CASES))
def test_every_runtime_renders_v2_token_for_token(
    case: str, v2_model: Exported, bpe_tokenizer: Tokenizer
) -> None:
    messages, prompt = CASES[case]
    loaded = load_checkpoint(v2_model.checkpoint)
    assert loaded.tokenizer.chat_template_version == CHAT_TEMPLATE_VERSION == 2
    ours = render(messages, loaded.tokenizer, add_generation_prompt=prompt)[0]
    assert ours == render(messages, bpe_tokenizer, add_generation_prompt=prompt)[0]
    text = render_text(messages, add_generation_prompt=prompt)
    llm = v2_model.llm
    template = llm.metadata["tokenizer.chat_template"]
    assert template == JINJA_TEMPLATE == v2_model.hf_tokenizer.chat_template

    # (b) transformers with the HF export's tokenizer_config.json
    assert transformers_ids(v2_model.hf_tokenizer, messages, prompt) == ours
    # (c) llama.cpp's built-in renderer on the GGUF's template, tokenized by llama.cpp
    builtin = llama_cpp_builtin_text(template, messages, prompt)
    assert builtin == text
    assert llama_cpp_tokenize(llm, builtin) == ours
    # (d) llama-cpp-python's Jinja path
    assert jinja_ids(llm, messages, prompt) == ours
    # (e) Ollama's TEMPLATE (Go), tokenized with the GGUF's vocabulary as Ollama does
    ollama = render_go_template(OLLAMA_TEMPLATE, messages)
    assert ollama == text
    assert llama_cpp_tokenize(llm, ollama) == ours


def test_llama_cpp_python_chat_completion_feeds_our_ids(v2_model: Exported) -> None:
    # The whole Llama(chat_format=None) path: template from the metadata, rendered, tokenized
    # and evaluated; the ids it tokenizes are the prompt.
    llm = v2_model.llm
    assert llm.chat_format == "chat_template.default"
    loaded = load_checkpoint(v2_model.checkpoint)
    seen: list[list[int]] = []
    tokenize = llm.tokenize

    def recording(text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        ids = list(tokenize(text, add_bos=add_bos, special=special))
        seen.append(ids)
        return ids

    llm.tokenize = recording
    try:
        llm.create_chat_completion(messages=PROMPTED, max_tokens=1, temperature=0.0)
    finally:
        del llm.tokenize
    assert seen[0] == render(PROMPTED, loaded.tokenizer, add_generation_prompt=True)[0]


def test_v2_loss_mask_on_a_hand_written_list(char_tokenizer: Tokenizer) -> None:
    # One token per character: the expected layout can be written out piece by piece.
    messages: list[Message] = [
        {"role": "system", "content": "be"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]
    expected = [
        ("<|system|>", 0), ("\n", 0), ("b", 0), ("e", 0), ("<|end|>", 0), ("\n", 0),
        ("<|user|>", 0), ("\n", 0), ("h", 0), ("i", 0), ("<|end|>", 0), ("\n", 0),
        ("<|assistant|>", 0), ("\n", 0), ("y", 1), ("o", 1), ("<|end|>", 1), ("\n", 0),
    ]  # fmt: skip

    def token(piece: str) -> int:
        if piece.startswith("<|"):
            return char_tokenizer.special_id(piece)
        (only,) = char_tokenizer.encode(piece)
        return only

    ids, mask = render(messages, char_tokenizer)
    assert ids == [token(piece) for piece, _ in expected]
    assert mask == [bit for _, bit in expected]
    prompt_ids, prompt_mask = render(messages[:2], char_tokenizer, add_generation_prompt=True)
    assert prompt_ids == ids[:14] and sum(prompt_mask) == 0


def test_v2_mask_when_a_reply_starts_with_whitespace(bpe_tokenizer: Tokenizer) -> None:
    # "\n" + "\n\nHi" is one pre-token: its first id may hold the template's newline and reply
    # text together. Whatever the merges, the ids are the runtime's and all reply text is learned.
    for content in ("\n\nHi there", "  Hi", "Hi"):
        messages: list[Message] = [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": content},
        ]
        ids, mask = render(messages, bpe_tokenizer)
        backend = Tokenizer.from_json(bpe_tokenizer.to_json()).backend
        backend.encode_special_tokens = False
        assert backend.encode(render_text(messages), add_special_tokens=False).ids == ids
        learned = [token for token, bit in zip(ids, mask, strict=True) if bit]
        assert learned[-1] == bpe_tokenizer.special_id("<|end|>")
        assert bpe_tokenizer.decode(learned[:-1]).endswith(content)
        assert bpe_tokenizer.decode(learned[:-1]) in (content, "\n" + content)


# --- template v1 models -----------------------------------------------------------------------------
def _v1_ids(tokenizer: Tokenizer, messages: list[Message], prompt: bool) -> list[int]:
    """v1 written out: role marker, content, <|end|>, with nothing between."""
    ids: list[int] = []
    for message in messages:
        role = tokenizer.special_id(f"<|{message['role']}|>")
        ids += [role, *tokenizer.encode(message["content"]), tokenizer.special_id("<|end|>")]
    return ids + ([tokenizer.special_id("<|assistant|>")] if prompt else [])


def test_a_v1_model_renders_exports_and_chats_in_v1(
    tmp_path: Path, bpe_tokenizer: Tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    transformers = pytest.importorskip("transformers")
    llama_cpp = pytest.importorskip("llama_cpp")
    from scratchlm.api import load

    checkpoint = _chat_checkpoint(tmp_path / "ckpt", bpe_tokenizer, 1)
    assert json.loads((checkpoint / "config.json").read_text())["chat_template_version"] == 1
    loaded = load_checkpoint(checkpoint)
    assert loaded.tokenizer.chat_template_version == 1
    for messages, prompt in CASES.values():
        expected = _v1_ids(bpe_tokenizer, messages, prompt)
        assert render(messages, loaded.tokenizer, add_generation_prompt=prompt)[0] == expected

    # exports carry v1; the GGUF one says in one line that llama.cpp needs --jinja for it
    export_hf(str(checkpoint), tmp_path / "hf")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(
        tmp_path / "hf", local_files_only=True
    )
    assert hf_tokenizer.chat_template == JINJA_TEMPLATES[1]
    assert transformers_ids(hf_tokenizer, PROMPTED, True) == _v1_ids(bpe_tokenizer, PROMPTED, True)
    # and comes back as v1 from its own export
    imported = load_checkpoint(import_hf(tmp_path / "hf", tmp_path / "imported"))
    assert imported.tokenizer.chat_template_version == 1
    with caplog.at_level(logging.WARNING):
        gguf_path = export_gguf(checkpoint, tmp_path / "model.gguf")
    warnings = [
        record.getMessage() for record in caplog.records if "template v1" in record.getMessage()
    ]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "--jinja" in warnings[0]
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=256, verbose=False)
    assert llm.metadata["tokenizer.chat_template"] == JINJA_TEMPLATES[1]
    assert jinja_ids(llm, PROMPTED, True) == _v1_ids(bpe_tokenizer, PROMPTED, True)
    # the limitation the warning names: llama.cpp's built-in renderer adds Phi-3's newlines
    builtin = llama_cpp_builtin_text(JINJA_TEMPLATES[1], PROMPTED, True)
    assert builtin == render_text(PROMPTED, add_generation_prompt=True, version=2)
    # Ollama renders with its own TEMPLATE, written in v1 for this model
    modelfile = export_ollama(checkpoint, tmp_path / "ollama", dtype="f32").read_text()
    assert f'TEMPLATE """{ollama_template(1)}"""' in modelfile
    for messages, prompt in CASES.values():
        assert render_go_template(ollama_template(1), messages) == render_text(
            messages, add_generation_prompt=prompt, version=1
        )

    # and it chats: the reply is greedy decoding after the v1 prompt
    from scratchlm.inference.engine import Engine
    from scratchlm.inference.settings import GREEDY

    lm = load(checkpoint, device="cpu")
    stops = frozenset(range(8))  # every control token ends a reply
    prompt_ids = _v1_ids(bpe_tokenizer, PROMPTED, True)
    expected_ids = list(
        Engine(lm.model).generate(prompt_ids, max_new_tokens=6, sampling=GREEDY, stop_ids=stops)
    )
    reply = lm.chat(PROMPTED, temperature=0, max_new_tokens=6)
    assert reply == bpe_tokenizer.decode(expected_ids)


def test_which_checkpoints_keep_v1(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    # A pretrained checkpoint learned no template: an old one recorded v1 all the same.
    base = _chat_checkpoint(tmp_path / "base", bpe_tokenizer, None)
    metadata = json.loads((base / "config.json").read_text())
    assert metadata["chat_template_version"] == 2
    metadata["chat_template_version"] = 1
    assert chat_template_version(base, metadata) == 2
    # Fine-tuned ones (and merged LoRA adapters) keep what they were trained with.
    assert chat_template_version(base, {**metadata, "finetune": {"supervised": True}}) == 1
    merged = {**metadata, "training": {"merged_from": {"base": "b", "adapter": "a"}}}
    assert chat_template_version(base, merged) == 1
    imported = {**metadata, "training": {"imported_from": "/some/hf/export"}}
    assert chat_template_version(base, imported) == 1
    with pytest.raises(ScratchLMError, match=r"v7.*upgrade scratchlm"):
        chat_template_version(base, {**metadata, "finetune": {"x": 1}, "chat_template_version": 7})


def test_finetuning_keeps_a_v1_model_in_v1(tmp_path: Path, bpe_tokenizer: Tokenizer) -> None:
    from scratchlm.finetune.trainer import finetune
    from scratchlm.training.run_config import TrainConfig

    data = tmp_path / "chat.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"Say {word}.", "completion": f"{word}!"}) + "\n"
            for word in ("cat", "dog", "sun", "red", "sea", "hat", "box", "pen")
        )
    )
    for name, version, recorded in (("v1", 1, 1), ("pre", None, 2)):
        base = _chat_checkpoint(tmp_path / f"{name}-base", bpe_tokenizer, version)
        config = TrainConfig(
            data=str(data),
            out=str(tmp_path / f"{name}-run"),
            batch_size=4,
            max_steps=2,
            eval_every=100,
            save_every=100,
            warmup_steps=1,
            quiet=True,
            sample_tokens=4,
            val_fraction=0.25,
        )
        finetune(config, base=str(base), log=lambda _: None)
        tuned = load_checkpoint(tmp_path / f"{name}-run")
        assert tuned.metadata["chat_template_version"] == recorded, name
        assert tuned.tokenizer.chat_template_version == recorded
