"""Ollama export: a directory with the GGUF file, a Modelfile and a README.

The Modelfile's TEMPLATE is our chat template written in Go template syntax (Ollama renders
templates with Go's text/template, not Jinja), in the model's own version (v1 for a model
fine-tuned with it). Ollama passes the conversation as `.Messages`, with the Modelfile's SYSTEM
prepended as a system message when the request has none. Ranging over the messages renders the
history; the generation prompt follows unless the last message is the assistant's, so the result is
`chat_template.render_text(messages, add_generation_prompt=<last role is not assistant>)`, what
transformers and llama.cpp render from the exported Jinja template.
"""

from __future__ import annotations

import os
from pathlib import Path

from scratchlm.chat_template import CHAT_TEMPLATE_VERSION, SEPARATORS, Message, render_text
from scratchlm.config import ModelConfig
from scratchlm.errors import ScratchLMError
from scratchlm.export.gguf import GGUF_DTYPES, check_exportable, export_gguf, is_gguf_file
from scratchlm.io_utils import atomic_write_text, write_failure
from scratchlm.tokenizer import ASSISTANT_TOKEN, END_OF_TURN_TOKEN, EOS_TOKEN, USER_TOKEN

GGUF_FILE = "model.gguf"
MODELFILE = "Modelfile"
README_FILE = "README.md"


def ollama_template(version: int) -> str:
    """The chat template `version` in Go template syntax.

    `{{-` trims the newline Ollama would otherwise keep before the first message. `$role` ends as
    the last message's role (assignment inside `range` sets the outer variable, Go 1.11+), so
    a conversation that ends with the assistant's message gets no generation prompt."""
    separator = SEPARATORS[version]
    return (
        '{{- $role := "" }}{{ range .Messages }}<|{{ .Role }}|>'
        + separator
        + "{{ .Content }}"
        + END_OF_TURN_TOKEN
        + separator
        + '{{ $role = .Role }}{{ end }}{{ if ne $role "assistant" }}'
        + ASSISTANT_TOKEN
        + separator
        + "{{ end }}"
    )


OLLAMA_TEMPLATE = ollama_template(CHAT_TEMPLATE_VERSION)
# Generation ends at the end of the assistant's turn; the others guard a model that skips <|end|>.
STOP_SEQUENCES: tuple[str, ...] = (END_OF_TURN_TOKEN, EOS_TOKEN, USER_TOKEN)
SAMPLING_PARAMETERS: dict[str, float | int] = {"temperature": 0.7, "top_p": 0.9, "top_k": 40}


def modelfile_text(
    config: ModelConfig, *, system: str | None = None, version: int = CHAT_TEMPLATE_VERSION
) -> str:
    """The Modelfile for a model exported beside it as model.gguf, chat template `version`."""
    lines = [f"FROM ./{GGUF_FILE}", "", f'TEMPLATE """{ollama_template(version)}"""', ""]
    for name, value in SAMPLING_PARAMETERS.items():
        lines.append(f"PARAMETER {name} {value}")
    lines.append(f"PARAMETER num_ctx {config.context_length}")
    for stop in STOP_SEQUENCES:
        lines.append(f'PARAMETER stop "{stop}"')
    if system is not None:
        if '"""' in system:
            raise ScratchLMError(
                'the system prompt may not contain """ (it ends a Modelfile string)'
            )
        lines += ["", f'SYSTEM """{system}"""']
    return "\n".join(lines) + "\n"


def readme_text(
    name: str, *, dtype: str, system: str | None, version: int = CHAT_TEMPLATE_VERSION
) -> str:
    messages: list[Message] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": "Hello!"})
    # repr-style escapes keep the template's newlines visible on one line
    example = render_text(messages, add_generation_prompt=True, version=version).replace(
        "\n", "\\n"
    )
    return (
        f"# {name} for Ollama\n\n"
        f"`{GGUF_FILE}` holds the weights ({dtype}) and tokenizer; `{MODELFILE}` adds the chat "
        "template, stop sequences and sampling defaults.\n\n"
        "```bash\n"
        f"ollama create {name} -f {MODELFILE}\n"
        f"ollama run {name}\n"
        "```\n\n"
        f"A conversation is rendered as `{example}` (the chat format the model was trained on).\n"
    )


def export_ollama(
    checkpoint: str | os.PathLike[str],
    out_dir: Path,
    *,
    dtype: str = "q8_0",
    system: str | None = None,
    force: bool = False,
    verify: bool = True,
) -> Path:
    """Write model.gguf, Modelfile and README.md into `out_dir`; returns the Modelfile's path."""
    from scratchlm.checkpoint import (
        chat_template_version,
        checkpoint_config,
        read_metadata,
        resolve_checkpoint,
    )

    out_dir = Path(out_dir)
    if dtype not in GGUF_DTYPES:
        raise ScratchLMError(
            f"unknown GGUF dtype {dtype!r}; choose one of {', '.join(GGUF_DTYPES)}"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ScratchLMError(f"{out_dir} is a file; pass a directory for the Ollama export")
    # The three files this export writes, each with a test that an existing one is ours: --force
    # overwrites those and leaves every other file in the directory alone.
    targets = {
        out_dir / GGUF_FILE: is_gguf_file,
        out_dir / MODELFILE: lambda path: _first_line(path) == f"FROM ./{GGUF_FILE}",
        out_dir / README_FILE: lambda path: _first_line(path).endswith(" for Ollama"),
    }
    existing = [path for path in targets if path.exists()]
    if existing and not force:
        raise ScratchLMError(
            f"{', '.join(map(str, existing))} already exist(s); pass --force to overwrite"
        )
    foreign = [str(path) for path in existing if not targets[path](path)]
    if foreign:
        raise ScratchLMError(
            f"{', '.join(foreign)} exist(s) but {'were' if len(foreign) > 1 else 'was'} not "
            "written by `scratchlm export ollama`; --force overwrites only its own files: move "
            "them away or choose another --out"
        )
    checkpoint_dir = resolve_checkpoint(checkpoint)
    metadata = read_metadata(checkpoint_dir)
    config = checkpoint_config(checkpoint_dir, metadata)
    check_exportable(config)  # before anything is written
    version = chat_template_version(checkpoint_dir, metadata)
    modelfile = modelfile_text(config, system=system, version=version)
    name = _model_name(config)
    export_gguf(checkpoint, out_dir / GGUF_FILE, dtype=dtype, force=True, verify=verify)
    for path, text in (
        (out_dir / MODELFILE, modelfile),
        (out_dir / README_FILE, readme_text(name, dtype=dtype, system=system, version=version)),
    ):
        try:
            atomic_write_text(path, text)
        except OSError as error:
            raise write_failure(path, error) from None
    return out_dir / MODELFILE


def _first_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.readline(4096).decode("utf-8", errors="replace").rstrip("\n")
    except OSError:
        return ""


def _model_name(config: ModelConfig) -> str:
    # Ollama model names are lowercase letters, digits, '-', '_' and '.'.
    cleaned = "".join(
        character if character.isalnum() or character in "-_." else "-"
        for character in config.name.lower()
    )
    return cleaned.strip("-.") or "scratchlm"
