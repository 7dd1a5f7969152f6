"""Prompt suites: a reply for every prompt of a file with fixed sampling settings, recorded as
Markdown and JSONL next to the checkpoint, for coherence checks and side-by-side comparisons."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from scratchlm.checkpoint import Checkpoint
from scratchlm.errors import ScratchLMError
from scratchlm.inference.engine import Engine
from scratchlm.inference.settings import SamplingSettings
from scratchlm.io_utils import atomic_write_text


@dataclass
class PromptReply:
    prompt: str
    reply: str
    checkpoint: str
    tokens: int
    finish_reason: str
    seconds: float


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line (blank lines and lines starting with # skipped), or JSONL with `prompt`."""
    file = Path(path)
    if not file.is_file():
        raise ScratchLMError(
            f"prompt file {file} does not exist; pass a text file (one prompt per line) or JSONL"
        )
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ScratchLMError(f"{file} is not UTF-8 text; save it as UTF-8") from None
    prompts: list[str] = []
    jsonl = file.suffix == ".jsonl"
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (not jsonl and line.startswith("#")):
            continue
        if jsonl:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ScratchLMError(
                    f"{file}:{number}: not valid JSON ({error.msg}); one object per line"
                ) from None
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise ScratchLMError(f"{file}:{number}: each line needs a string field 'prompt'")
            prompts.append(record["prompt"])
        else:
            prompts.append(line.replace("\\n", "\n"))
    if not prompts:
        raise ScratchLMError(f"{file} holds no prompts; write one prompt per line")
    return prompts


def run_prompt_suite(
    checkpoints: list[Checkpoint],
    prompts: list[str],
    *,
    sampling: SamplingSettings,
    max_new_tokens: int,
    seed: int,
    suite_name: str,
) -> tuple[Path, Path]:
    """Generate for every prompt with every checkpoint; write `<suite>.md` and `<suite>.jsonl` into
    the first checkpoint's directory. Returns their paths."""
    replies: list[PromptReply] = []
    for checkpoint in checkpoints:
        engine = Engine(checkpoint.model)
        tokenizer = checkpoint.tokenizer
        for prompt in prompts:
            started = time.perf_counter()
            prompt_ids = tokenizer.encode(prompt) or [tokenizer.eos_id]
            text = "".join(
                engine.stream_text(
                    tokenizer,
                    prompt_ids,
                    max_new_tokens=max_new_tokens,
                    sampling=sampling,
                    seed=seed,
                    stop_ids=frozenset({tokenizer.eos_id}),
                    truncate=True,
                )
            )
            replies.append(
                PromptReply(
                    prompt,
                    text,
                    str(checkpoint.path),
                    len(tokenizer.encode(text)),
                    engine.finish_reason,
                    round(time.perf_counter() - started, 3),
                )
            )
    target_dir = checkpoints[0].path
    jsonl_path = target_dir / f"{suite_name}.jsonl"
    markdown_path = target_dir / f"{suite_name}.md"
    atomic_write_text(jsonl_path, "".join(json.dumps(asdict(reply)) + "\n" for reply in replies))
    atomic_write_text(
        markdown_path,
        render_markdown(checkpoints, prompts, replies, sampling, max_new_tokens, seed),
    )
    return markdown_path, jsonl_path


def render_markdown(
    checkpoints: list[Checkpoint],
    prompts: list[str],
    replies: list[PromptReply],
    sampling: SamplingSettings,
    max_new_tokens: int,
    seed: int,
) -> str:
    settings = ", ".join(f"{key}={value}" for key, value in asdict(sampling).items())
    lines = [
        "# Prompt suite",
        "",
        f"Sampling: {settings}, max_new_tokens={max_new_tokens}, seed={seed}.",
        "",
        "Checkpoints: " + ", ".join(f"`{checkpoint.path}`" for checkpoint in checkpoints),
        "",
    ]
    by_key = {(reply.checkpoint, reply.prompt): reply for reply in replies}
    for number, prompt in enumerate(prompts, start=1):
        lines += [f"## {number}. {prompt.splitlines()[0][:80]}", "", "```text", prompt, "```", ""]
        for checkpoint in checkpoints:
            reply = by_key[(str(checkpoint.path), prompt)]
            if len(checkpoints) > 1:
                lines.append(
                    f"**{checkpoint.path}** ({reply.tokens} tokens, {reply.finish_reason})"
                )
                lines.append("")
            lines += ["```text", reply.reply, "```", ""]
    return "\n".join(lines)
