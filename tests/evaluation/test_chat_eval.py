"""Chat-model evaluation against references: the batched letter scorer against one naive full
forward per rendered prompt, GSM8K chat scoring against a naive greedy loop (a full forward per
token, no cache, no Engine), the documented prompt text, and `scratchlm eval --chat` end to end."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from scratchlm.chat_template import (
    ASSISTANT_TOKEN,
    END_OF_TURN_TOKEN,
    generation_prompt,
    render,
    render_text,
)
from scratchlm.checkpoint import load_checkpoint, save_checkpoint
from scratchlm.cli import main
from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.chat_eval import (
    chat_prompt,
    format_multiple_choice,
    letter_ids,
    score_chat_gsm8k,
    score_chat_multiple_choice,
    score_letters,
)
from scratchlm.evaluation.examples import TaskSpec
from scratchlm.evaluation.scoring import ScoringStats
from scratchlm.evaluation.tasks import (
    MMLU_SUBJECTS,
    ChatQuestion,
    expand_chat_task_names,
    extract_final_number,
    load_questions,
    load_task,
)
from scratchlm.model import GPT, build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import SAMPLE_TEXT, tiny_config
from tests.evaluation.test_scoring import tiny_model

ARC_RECORD = {
    "id": "Mercury_7029645",
    "question": "Which gas do plants take in from the air? ",
    "choices": {"text": ["oxygen", "carbon dioxide", "helium"], "label": ["1", "2", "3"]},
    "answerKey": "2",
}
ARC_PROMPT = (
    "Which gas do plants take in from the air?\n\n"
    "A. oxygen\nB. carbon dioxide\nC. helium\n\n"
    "Answer with the letter of the correct choice only (A, B or C)."
)
ARC = [
    ARC_RECORD,
    *(
        {
            "id": f"q{number}",
            "question": question,
            "choices": {"text": list(choices), "label": list("ABCDE"[: len(choices)])},
            "answerKey": answer,
        }
        for number, (question, choices, answer) in enumerate(
            [
                ("What did Tom love?", ("his red ball", "the sea", "a cat", "rain"), "A"),
                ("Who helped Tom?", ("Lily", "his dog", "nobody at all", "a bird", "Sam"), "A"),
                ("Where did the ball roll?", ("the sky", "into the garden", "home", "up"), "B"),
                ("How did they feel?", ("sad", "tired", "happy", "cold"), "C"),
            ]
        )
    ),
]
MMLU = {
    "anatomy": [
        ["Which bone is in the arm?", "femur", "humerus", "tibia", "fibula", "1"],
        ["How many lungs do people have?", "one", "two", "three", "four", "1"],
    ],
    "virology": [["Which is a virus?", "influenza", "E. coli", "yeast", "mold", "0"]],
}
# Long questions: a tiny model's reply runs to the end of its 128-token context, so fewer tokens.
GSM8K = [
    {
        "question": "Tom has 3 red balls and finds 4 more in the garden. His friend Lily gives him "
        "2 more, and then his dog takes 1 away to play with. How many balls does Tom have now?",
        "answer": "3+4+2-1=8\n#### 8",
    },
    {
        "question": "Lily had 10 cats and gave away 2 of them to Tom, who loved cats. Then she "
        "found 5 more cats in the garden, and 1 ran home. How many cats does Lily have?",
        "answer": "10-2+5-1=12\n#### 12",
    },
]


def write_jsonl(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "evals"
    (folder / "mmlu" / "test").mkdir(parents=True)
    write_jsonl(folder / "arc_easy_test.jsonl", ARC)
    write_jsonl(folder / "gsm8k_test.jsonl", GSM8K)
    for subject, rows in MMLU.items():
        lines = ["question,choice0,choice1,choice2,choice3,answer", *(",".join(r) for r in rows)]
        (folder / "mmlu" / "test" / f"{subject}_test.csv").write_text("\n".join(lines) + "\n")
    return folder


def naive_letters(
    model: GPT, tokenizer: Tokenizer, question: ChatQuestion
) -> tuple[int, list[float]]:
    """One forward of the rendered prompt alone (the oldest tokens dropped to fit), the letters'
    logits at its last position, encoded here independently of the scorer."""
    ids, _ = render(
        [{"role": "user", "content": format_multiple_choice(question)}],
        tokenizer,
        add_generation_prompt=True,
    )
    ids = ids[-model.config.context_length :]
    letters = [tokenizer.encode(letter)[0] for letter in "ABCDE"[: len(question.choices)]]
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, -1].double()
    values = logits[letters].tolist()
    return values.index(max(values)), values


def naive_greedy_reply(
    model: GPT, tokenizer: Tokenizer, prompt: list[int], limit: int
) -> list[int]:
    """Greedy decoding by a full forward over the whole sequence per new token (no cache), until
    <|end|> or EOS, `limit` tokens, or a sequence one past the context (the last token sampled
    is never fed back)."""
    stops = {tokenizer.special_id(END_OF_TURN_TOKEN), tokenizer.eos_id}
    tokens, reply = list(prompt), []
    with torch.no_grad():
        for _ in range(limit):
            logits = model(torch.tensor([tokens]))[0, -1]  # (padded_vocab,)
            token = int(logits[: model.config.vocab_size].argmax())
            if token in stops:
                break
            reply.append(token)
            tokens.append(token)
            if len(tokens) > model.config.context_length:
                break
    return reply


# --- the prompt ----------------------------------------------------------------------------------


def test_arc_record_renders_the_documented_prompt(task_dir: Path, bpe_tokenizer: Tokenizer) -> None:
    spec, questions = load_questions("arc_easy", task_data=task_dir)
    first = questions[0]
    # ARC's numeric labels are re-lettered by position: answerKey "2" is the second choice, B.
    assert first.id == ARC_RECORD["id"] and first.gold == 1
    assert first.choices == ("oxygen", "carbon dioxide", "helium")
    assert format_multiple_choice(first) == ARC_PROMPT
    ids = chat_prompt(bpe_tokenizer, ARC_PROMPT)
    assert render_text([{"role": "user", "content": ARC_PROMPT}], add_generation_prompt=True) == (
        f"<|user|>\n{ARC_PROMPT}<|end|>\n<|assistant|>\n"
    )
    assert ids[-2:] == generation_prompt(bpe_tokenizer)
    assert ids[-2] == bpe_tokenizer.special_id(ASSISTANT_TOKEN)
    assert bpe_tokenizer.decode(ids[1:-4]) == "\n" + ARC_PROMPT
    # Chance is per question: 1/3 for the record above, 1/5 and 1/4 for the others.
    assert spec.random_baseline == pytest.approx((1 / 3 + 1 / 4 + 1 / 5 + 1 / 4 + 1 / 4) / 5)
    assert spec.kind == "multiple_choice"


def test_questions_match_the_base_loader(task_dir: Path) -> None:
    """Same records, same parsing as the base path: ids, gold answers and choice texts."""
    for name in ("arc_easy", "mmlu_anatomy", "gsm8k"):
        _, questions = load_questions(name, task_data=task_dir, limit=2)
        _, examples = load_task(name, task_data=task_dir, limit=2)
        assert [q.id for q in questions] == [e.id for e in examples]
    _, mmlu = load_questions("mmlu_anatomy", task_data=task_dir)
    assert mmlu[0].question == "Which bone is in the arm?" and mmlu[0].gold == 1
    assert mmlu[0].choices == ("femur", "humerus", "tibia", "fibula")
    _, gsm = load_questions("gsm8k", task_data=task_dir)
    assert [(q.question, q.answer, q.choices) for q in gsm] == [
        (GSM8K[0]["question"], "8", ()),
        (GSM8K[1]["question"], "12", ()),
    ]


def test_hub_schemas_give_the_same_questions(task_dir: Path) -> None:
    """The Hugging Face datasets' schemas (cais/mmlu's `choices` list and int `answer`) through
    the loader seam give the questions the local upstream files give."""
    mmlu_hub = [
        {"question": q, "subject": "anatomy", "choices": [a, b, c, d], "answer": int(gold)}
        for q, a, b, c, d, gold in MMLU["anatomy"]
    ]
    tables: dict[tuple[str, str | None, str], Sequence[Mapping[str, Any]]] = {
        ("allenai/ai2_arc", "ARC-Easy", "test"): ARC,
        ("cais/mmlu", "anatomy", "test"): mmlu_hub,
        ("openai/gsm8k", "main", "test"): GSM8K,
    }
    calls: list[tuple[str, str | None, str]] = []

    def loader(path: str, config: str | None, split: str) -> list[dict[str, Any]]:
        calls.append((path, config, split))
        return [dict(row) for row in tables[(path, config, split)]]

    for name in ("arc_easy", "mmlu_anatomy", "gsm8k"):
        hub = load_questions(name, loader=loader, limit=3)
        assert hub == load_questions(name, task_data=task_dir, limit=3)
    assert calls == list(tables)


def test_letter_tokens_are_the_first_token_of_an_assistant_reply(
    bpe_tokenizer: Tokenizer, char_tokenizer: Tokenizer
) -> None:
    letters = letter_ids(bpe_tokenizer, 4)
    assert letters == [bpe_tokenizer.encode(letter)[0] for letter in "ABCD"]
    assert len(set(letters)) == 4
    for letter, token in zip("ABCD", letters, strict=True):
        ids, _ = render(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": letter}],
            bpe_tokenizer,
        )
        reply_start = ids.index(bpe_tokenizer.special_id(ASSISTANT_TOKEN)) + len(
            generation_prompt(bpe_tokenizer)
        )
        assert ids[reply_start] == token
        assert bpe_tokenizer.encode(" " + letter)[0] != token  # the spaced form differs
    # SAMPLE_TEXT has no capital "A": a character tokenizer cannot spell the letter.
    with pytest.raises(ScratchLMError, match="answer letter 'A'"):
        letter_ids(char_tokenizer, 4)


# --- scoring against naive references --------------------------------------------------------


def mixed_questions() -> list[ChatQuestion]:
    words = SAMPLE_TEXT.split()
    questions = []
    for number in range(11):
        count = 2 + number % 4  # 2 to 5 choices
        stem = " ".join(words[number : number + 3 + 5 * (number % 3)])
        choices = tuple(" ".join(words[number + k : number + k + 2]) for k in range(count))
        questions.append(ChatQuestion(f"q{number}", stem + "?", choices, number % count))
    # Longer than a 96-token context: left-truncated.
    questions.append(ChatQuestion("long", " ".join(words * 2), ("yes", "no"), 0))
    return questions


# GPT-2 layout one question per forward and in uneven batches; RoPE + GQA all in one batch.
@pytest.mark.parametrize(("preset", "batch_size"), [("tiny", 1), ("tiny", 5), ("llama-15m", 16)])
def test_batched_letter_scorer_equals_a_naive_forward_per_question(
    bpe_tokenizer: Tokenizer, preset: str, batch_size: int
) -> None:
    model = tiny_model(preset, bpe_tokenizer, context_length=96)
    questions = mixed_questions()
    prompts = [chat_prompt(bpe_tokenizer, format_multiple_choice(q)) for q in questions]
    assert max(len(p) for p in prompts) > 96 > min(len(p) for p in prompts)
    candidates = [letter_ids(bpe_tokenizer, len(q.choices)) for q in questions]
    stats = ScoringStats()
    predictions = score_letters(model, prompts, candidates, batch_size=batch_size, stats=stats)
    naive = [naive_letters(model, bpe_tokenizer, q) for q in questions]
    assert [p.predicted for p in predictions] == [best for best, _ in naive]
    for prediction, (_, values) in zip(predictions, naive, strict=True):
        assert prediction.logits == pytest.approx(values, abs=1e-5)
    assert stats.truncated == sum(len(p) > 96 for p in prompts) > 0
    assert stats.tokens == sum(min(len(p), 96) for p in prompts)
    # The task's accuracy is the naive predictions' hit rate.
    spec = TaskSpec("arc_easy", "multiple_choice", 0.3)
    result = score_chat_multiple_choice(
        model, bpe_tokenizer, spec, questions, batch_size=batch_size
    )
    hits = [best == q.gold for (best, _), q in zip(naive, questions, strict=True)]
    assert result.correct == hits and result.metric == "acc"
    assert result.value == pytest.approx(sum(hits) / len(hits))
    assert result.centered == pytest.approx((result.value - 0.3) / 0.7)


def test_gsm8k_chat_scoring_equals_a_naive_greedy_loop(bpe_tokenizer: Tokenizer) -> None:
    model = tiny_model("tiny", bpe_tokenizer, context_length=160, seed=4)
    stems = ["Tom has 3 balls.", "Lily had 10 cats. How many?", "The end?", "Once upon a time"]
    prompts = [chat_prompt(bpe_tokenizer, stem) for stem in stems]
    # Steer the random model: the digit "4" takes the output row of the token its replies pick
    # most, <|end|> that of a rarer one (scaled up, so each wins where that token would), so that
    # replies hold numbers and some end at <|end|> before the limit.
    picked = Counter(
        t for prompt in prompts for t in naive_greedy_reply(model, bpe_tokenizer, prompt, 40)
    )
    common = [token for token, _ in picked.most_common()]
    with torch.no_grad():
        weight = model.lm_head.weight  # (padded_vocab, d_model)
        four, end = bpe_tokenizer.encode("4")[0], bpe_tokenizer.special_id(END_OF_TURN_TOKEN)
        weight[four], weight[end] = weight[common[0]] * 1.5, weight[common[3]] * 1.5
    replies = [naive_greedy_reply(model, bpe_tokenizer, prompt, 40) for prompt in prompts]
    assert any(len(reply) < 40 for reply in replies) and any(len(reply) == 40 for reply in replies)
    finals = [extract_final_number(bpe_tokenizer.decode(reply)) for reply in replies]
    numbered = [index for index, final in enumerate(finals) if final is not None]
    assert len(numbered) >= 2
    # References: its own final number for the first reply that has one, another for the others.
    answers = [
        final if index == numbered[0] and final else str(int(float(final or "0")) + 1)
        for index, final in enumerate(finals)
    ]
    questions = [
        ChatQuestion(f"g{index}", stem, answer=answer)
        for index, (stem, answer) in enumerate(zip(stems, answers, strict=True))
    ]
    stats = ScoringStats()
    spec = TaskSpec("gsm8k", "generative", 0.0)
    result = score_chat_gsm8k(model, bpe_tokenizer, spec, questions, max_new_tokens=40, stats=stats)
    expected = [index == numbered[0] for index in range(len(questions))]
    assert result.correct == expected and result.metric == "exact_match"
    # The same replies token for token: as many generated tokens as the naive loop produced.
    assert stats.generated_tokens == sum(len(reply) for reply in replies)


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture
def chat_checkpoint(tmp_path: Path, bpe_tokenizer: Tokenizer) -> Path:
    torch.manual_seed(0)
    model = build_model(
        tiny_config("tiny", vocab_size=bpe_tokenizer.vocab_size, context_length=128)
    )
    return save_checkpoint(tmp_path / "ckpt", model, bpe_tokenizer)


def test_eval_chat_json_matches_naive_scorers(
    chat_checkpoint: Path, task_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "-m", str(chat_checkpoint), "--task-data", str(task_dir), "--device", "cpu"]
    tasks = "arc_easy,mmlu_anatomy,mmlu_virology,gsm8k"
    assert main([*argv, "--tasks", tasks, "--chat", "--batch-size", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    loaded = load_checkpoint(chat_checkpoint, "cpu")
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    assert report["chat"] is True and report["num_fewshot"] == 0
    by_task = {task["task"]: task for task in report["tasks"]}
    assert list(by_task) == ["arc_easy", "mmlu_anatomy", "mmlu_virology", "gsm8k"]
    hits: dict[str, list[bool]] = {}
    for name in ("arc_easy", "mmlu_anatomy", "mmlu_virology"):
        _, questions = load_questions(name, task_data=task_dir)
        hits[name] = [naive_letters(model, tokenizer, q)[0] == q.gold for q in questions]
        assert by_task[name]["metric"] == "acc"
        assert by_task[name]["value"] == pytest.approx(sum(hits[name]) / len(hits[name]))
    _, gsm = load_questions("gsm8k", task_data=task_dir)
    replies = [
        naive_greedy_reply(model, tokenizer, chat_prompt(tokenizer, q.question), 256) for q in gsm
    ]
    gsm_hits = [
        extract_final_number(tokenizer.decode(reply)) == q.answer
        for reply, q in zip(replies, gsm, strict=True)
    ]
    assert by_task["gsm8k"]["metric"] == "exact_match"
    assert by_task["gsm8k"]["value"] == pytest.approx(sum(gsm_hits) / len(gsm_hits))
    # The aggregate: ARC, pooled MMLU (3 questions of 4 choices) and GSM8K, each centered.
    arc_chance = (1 / 3 + 1 / 4 + 1 / 5 + 1 / 4 + 1 / 4) / 5
    mmlu = hits["mmlu_anatomy"] + hits["mmlu_virology"]
    centered = [
        (sum(hits["arc_easy"]) / 5 - arc_chance) / (1 - arc_chance),
        (sum(mmlu) / 3 - 0.25) / 0.75,
        sum(gsm_hits) / len(gsm_hits),
    ]
    assert [entry["task"] for entry in report["aggregate_tasks"]] == ["arc_easy", "mmlu", "gsm8k"]
    assert report["centered_aggregate"] == pytest.approx(sum(centered) / 3)
    assert report["generated_tokens"] == sum(len(reply) for reply in replies)

    assert main([*argv, "--tasks", "arc_easy,mmlu_virology", "--chat", "--limit", "2"]) == 0
    table = capsys.readouterr().out
    header = ["task", "metric", "value", "chance", "centered", "examples"]
    assert table.splitlines()[0].split() == header
    assert "arc_easy" in table and "mmlu_virology" in table and "chat, 0-shot" in table
    assert "tokens/s" in table


def test_chat_task_names() -> None:
    everything = expand_chat_task_names("chat")
    assert everything == [
        "arc_easy",
        "arc_challenge",
        *(f"mmlu_{subject}" for subject in MMLU_SUBJECTS),
        "gsm8k",
    ]
    assert expand_chat_task_names("gsm8k, mmlu_anatomy,chat")[:2] == ["gsm8k", "mmlu_anatomy"]
    with pytest.raises(ScratchLMError, match="'lambada' has no chat form"):
        expand_chat_task_names("arc_easy,lambada")


def test_eval_chat_errors_are_one_line(
    chat_checkpoint: Path, task_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "-m", str(chat_checkpoint), "--task-data", str(task_dir), "--device", "cpu"]

    def error(*extra: str) -> str:
        assert main([*argv, *extra]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1
        return captured.err

    assert "arc_easy, arc_challenge, mmlu" in error("--tasks", "hellaswag", "--chat")
    assert "'lambada' has no chat form" in error("--tasks", "gsm8k,lambada", "--chat")
    assert "zero-shot" in error("--tasks", "arc_easy", "--chat", "--num-fewshot", "5")
    # A checkpoint written before the chat template (no version in its config.json).
    config = chat_checkpoint / "config.json"
    metadata = json.loads(config.read_text())
    del metadata["chat_template_version"]
    config.write_text(json.dumps(metadata))
    assert "scratchlm finetune" in error("--tasks", "arc_easy", "--chat")
    # The base path does not need a chat template.
    assert main([*argv, "--tasks", "arc_easy", "--json"]) == 0
