"""Supervised fine-tuning data: conversations -> (ids, loss mask) -> padded batches.

The files (`records.read_records`): `.jsonl`, `.jsonl.gz`, `.json` arrays (Alpaca's original
`alpaca_data.json`) and `hf:NAME` datasets. Accepted record shapes, mixed freely:
- Alpaca: {"instruction", "input" (optional), "output"}
- OpenAI-style: {"messages": [{"role", "content"}, ...]} (multi-turn, optional system first)
- ShareGPT: {"conversations": [{"from": "human"|"gpt"|"system", "value"}, ...]}
- prompt/completion: {"prompt", "completion"}
Every conversation is rendered by the one chat template, so the loss falls only on assistant
contents and their end marker. Batches are padded to their longest example (no packing: no
example ever attends to another); padding and prompt positions get the target -100 (ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from scratchlm.chat_template import Message, render, validate_messages
from scratchlm.errors import ScratchLMError
from scratchlm.finetune import records as record_files
from scratchlm.tokenizer import Tokenizer, require_unicode

IGNORE = -100
ExampleT = TypeVar("ExampleT")
SFT_KEYS = (
    {"instruction", "output"},
    {"messages"},
    {"conversations"},
    {"prompt", "completion"},
)
# ShareGPT's speaker names (`from`) -> our roles; OpenAI-style `role` names map to themselves.
SPEAKERS = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "assistant": "assistant",
    "system": "system",
}


def parse_messages(value: object, where: str) -> list[Message]:
    """A conversation list, OpenAI-style ({role, content}) or ShareGPT-style ({from, value}),
    as validated messages."""
    if not isinstance(value, list) or not value:
        raise ScratchLMError(
            f"{where}: a conversation must be a non-empty list of {{role, content}} "
            "(or ShareGPT {from, value}) objects"
        )
    messages: list[Any] = []
    for index, turn in enumerate(value):
        if isinstance(turn, dict) and "from" in turn and "value" in turn and "role" not in turn:
            speaker = str(turn["from"]).lower()
            if speaker not in SPEAKERS:
                raise ScratchLMError(
                    f"{where}: turn {index} is from {turn['from']!r}; ShareGPT speakers are "
                    f"{', '.join(sorted(SPEAKERS))}"
                )
            messages.append({"role": SPEAKERS[speaker], "content": turn["value"]})
        else:
            messages.append(turn)
    try:
        validate_messages(messages)
    except ScratchLMError as error:
        raise ScratchLMError(f"{where}: {error}") from None
    return [Message(role=m["role"], content=m["content"]) for m in messages]


def record_to_messages(record: object, where: str) -> list[Message]:
    if not isinstance(record, dict):
        raise ScratchLMError(f"{where}: expected a JSON object")
    if "messages" in record or "conversations" in record:
        key = "messages" if "messages" in record else "conversations"
        messages = parse_messages(record[key], where)
        if not any(message["role"] == "assistant" for message in messages):
            raise ScratchLMError(
                f"{where}: the conversation has no assistant message to learn from"
            )
        return messages
    if "instruction" in record and "output" in record:
        prompt = str(record["instruction"])
        if record.get("input"):
            prompt += "\n\n" + str(record["input"])
        return [
            Message(role="user", content=prompt),
            Message(role="assistant", content=str(record["output"])),
        ]
    if "prompt" in record and "completion" in record:
        return [
            Message(role="user", content=str(record["prompt"])),
            Message(role="assistant", content=str(record["completion"])),
        ]
    raise ScratchLMError(
        f"{where}: unknown record shape with keys {sorted(record)}; use Alpaca "
        '(instruction/input/output), {"messages": [...]}, ShareGPT {"conversations": [...]} '
        "or prompt/completion"
    )


def is_sft_file(source: str | Path) -> bool:
    """Chat data rather than plain text: an `hf:` dataset or a .jsonl/.jsonl.gz/.json(.gz) file
    whose first record has one of the supervised shapes (a .jsonl or dataset of {"text"} is
    pretraining text). A .json(.gz) or .jsonl.gz file that cannot be read counts as chat data, so that
    reading it reports what is wrong."""
    text = str(source)
    if not record_files.is_record_file(text):
        return False
    try:
        first = record_files.first_record(text)
    except ScratchLMError:
        return not text.lower().endswith(".jsonl")
    return first is not None and any(keys <= set(first) for keys in SFT_KEYS)


def read_conversations(source: str | Path) -> list[list[Message]]:
    conversations = []
    for where, record in record_files.read_records(source):
        messages = record_to_messages(record, where)
        for message in messages:
            # JSON escapes can spell lone surrogates ("\\ud800") that no tokenizer accepts.
            require_unicode(message["content"], where)
        conversations.append(messages)
    return conversations


@dataclass
class Example:
    ids: list[int]
    mask: list[int]


def tokenize_conversations(
    conversations: list[list[Message]], tokenizer: Tokenizer, context_length: int
) -> tuple[list[Example], int]:
    """Examples cut to context_length + 1 tokens; also how many were cut."""
    examples, cut = [], 0
    for messages in conversations:
        ids, mask = render(messages, tokenizer)
        if len(ids) > context_length + 1:
            ids, mask = ids[: context_length + 1], mask[: context_length + 1]
            cut += 1
        if sum(mask[1:]) > 0:  # something left to learn after the cut
            examples.append(Example(ids, mask))
    return examples, cut


def make_batch(examples: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (B, longest - 1); targets are -100 where nothing is learned."""
    length = max(len(example.ids) for example in examples) - 1
    inputs = torch.full((len(examples), length), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    for row, example in enumerate(examples):
        count = len(example.ids) - 1
        inputs[row, :count] = torch.tensor(example.ids[:-1])
        learned = torch.tensor(example.mask[1:], dtype=torch.bool)
        targets[row, :count] = torch.where(learned, torch.tensor(example.ids[1:]), IGNORE)
    return inputs, targets


class SFTLoader:
    """Shuffled batches of examples, a new order every epoch; exact resume from `state_dict`.

    Rank-aware like `TokenWindowLoader`: a global cursor walks the epoch's order, rank r takes
    `order[cursor + r*B : cursor + (r+1)*B]`, and the cursor advances by B * world_size."""

    def __init__(
        self,
        examples: list[Any],
        *,
        batch_size: int,
        seed: int,
        pad_id: int,
        rank: int = 0,
        world_size: int = 1,
        collate: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        if not examples:
            raise ScratchLMError("no training examples left after tokenization; check the data")
        if world_size > 1 and len(examples) < batch_size * world_size:
            raise ScratchLMError(
                f"{len(examples)} training examples cannot fill one batch of {batch_size} on each "
                f"of {world_size} ranks; use a smaller --batch-size or fewer processes"
            )
        self.examples, self.batch_size, self.seed, self.pad_id = examples, batch_size, seed, pad_id
        self.rank, self.world_size = rank, world_size
        # What turns the chosen examples into a batch: padded (inputs, targets) by default;
        # preference pairs bring their own.
        self.collate = collate or (lambda chosen: make_batch(chosen, pad_id))
        self.epoch, self.cursor = 0, 0
        self.order = self._order()

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.examples), generator=generator).tolist()

    def next_batch(self) -> Any:
        global_batch = self.batch_size * self.world_size
        if self.cursor + global_batch > len(self.order):
            if self.cursor == 0:  # fewer examples than a batch (one process): use them all
                chosen = self.order
                self.epoch += 1
                self.order = self._order()
                return self.collate([self.examples[i] for i in chosen])
            self.epoch, self.cursor = self.epoch + 1, 0
            self.order = self._order()
        first = self.cursor + self.rank * self.batch_size
        chosen = self.order[first : first + self.batch_size]
        self.cursor += global_batch
        return self.collate([self.examples[i] for i in chosen])

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "seed": self.seed,
            "examples": len(self.examples),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("examples") != len(self.examples) or state.get("seed") != self.seed:
            raise ScratchLMError(
                "--resume: the fine-tuning data or seed differ from the run's; resume with the same --data and --seed"
            )
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self.order = self._order()


def eval_batches(
    examples: list[Example], batch_size: int, pad_id: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(examples), batch_size):
        yield make_batch(examples[start : start + batch_size], pad_id)


def split_examples(
    examples: list[ExampleT], val_fraction: float, seed: int
) -> tuple[list[ExampleT], list[ExampleT]]:
    """A seeded split (of examples, preference pairs, ...); at least one validation example when
    there are two or more."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    count = (
        min(len(examples) - 1, max(1, round(len(examples) * val_fraction)))
        if len(examples) > 1
        else 0
    )
    val = [examples[i] for i in sorted(order[:count])]
    train = [examples[i] for i in sorted(order[count:])]
    return train, val
