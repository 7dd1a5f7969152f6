"""`scratchlm quickstart` end to end on a small budget: every stage runs, the closing summary prints
the story measures and a chat turn about a story, and the chat model's context is extended."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratchlm.checkpoint import load_checkpoint
from scratchlm.data.stories.corpus import generate_stories
from scratchlm.evaluation.chat_eval import chat_prompt
from scratchlm.evaluation.stories import DEFAULT_QUESTIONS, STORY_QA_SEED
from scratchlm.finetune.tasks import story_qa_examples
from scratchlm.quickstart import (
    CHAT_CONTEXT,
    PRETRAIN_BATCH_SIZE,
    QUICKSTART_VOCAB_SIZE,
    chat_examples,
    run_quickstart,
)
from scratchlm.tokenizer import train_bpe


@pytest.mark.slow  # about 40 s: a tokenizer, 20 s of training, the summary's measures
def test_quickstart_runs_every_stage_and_prints_the_story_measures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qs"
    stopped_by = run_quickstart(out=out, minutes=0.5, corpus_mb=1, vocab_size=512)
    assert stopped_by is None
    text = capsys.readouterr().out
    for stage in ("1/4 corpus and tokenizer", "2/4 pretraining", "3/4 chat fine-tuning", "4/4"):
        assert stage in text
    assert "character coherence" in text
    assert "story questions" in text and "held-out questions answered" in text
    assert "--- chat about a story it was just told" in text
    # The base model keeps the preset's context; the chat model's is extended to hold a story
    # and a question about it, with the same weights' shapes.
    base, chat = load_checkpoint(out), load_checkpoint(out / "chat")
    assert base.config.context_length == 256 and base.config.vocab_size == 512
    assert chat.config == base.config.replace(context_length=CHAT_CONTEXT)
    assert "(context 512 tokens)" in text
    pretraining = json.loads((out / "run_config.json").read_text())
    assert pretraining["batch_size"] == PRETRAIN_BATCH_SIZE


def test_the_default_context_holds_every_held_out_story_with_its_question() -> None:
    # A tokenizer of the quickstart's size trained on the corpus's own stories (a sample: the
    # quickstart trains on 5M characters of them); every story-qa prompt of the summary and of
    # `scratchlm eval --tasks story-qa` must fit with room for the reply's first tokens.
    tokenizer = train_bpe(list(generate_stories(2000, seed=0)), QUICKSTART_VOCAB_SIZE)
    lengths = [
        len(chat_prompt(tokenizer, example.problem.prompt))
        for example in story_qa_examples("heldout", DEFAULT_QUESTIONS, STORY_QA_SEED)
    ]
    assert max(lengths) + 16 <= CHAT_CONTEXT
    # In the base model's 256 tokens about half of them do not fit: the reason for extending.
    assert sum(length >= 256 for length in lengths) > len(lengths) // 4


def test_the_chat_data_adds_train_split_story_questions_with_sentence_replies() -> None:
    records = chat_examples(20, 30, seed=5)
    assert len(records) == 50
    questions = {
        (example.problem.prompt, example.question.reply)
        for example in story_qa_examples("train", 30, 5)
    }
    pairs = {(record["instruction"], record["output"]) for record in records}
    assert questions <= pairs  # every story question, with its sentence reply
    assert chat_examples(20, 30, seed=5) == records  # the same data (and order) for a seed
    assert [record["output"] for record in records] != [
        record["output"] for record in chat_examples(20, 30, seed=6)
    ]
    assert len(chat_examples(20, 0, seed=5)) == 20
