"""Benchmark task loaders: tiny fixtures in each upstream format must give the exact text
lm-evaluation-harness builds from its task YAMLs (expected strings written by hand from them)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.examples import (
    Continuation,
    GenerativeExample,
    LastWordExample,
    MultipleChoiceExample,
)
from scratchlm.evaluation.tasks import (
    CORE_TASKS,
    MMLU_SUBJECTS,
    TASK_NAMES,
    expand_task_names,
    extract_final_number,
    load_task,
    load_task_from_hub,
)
from tests.conftest import SHARED_DATA, skip_without_shared_data


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def mc(example: object) -> MultipleChoiceExample:
    assert isinstance(example, MultipleChoiceExample)
    return example


def shared_context(example: MultipleChoiceExample) -> str:
    contexts = {choice.context for choice in example.choices}
    assert len(contexts) == 1
    return contexts.pop()


# --- fixtures in the upstream formats ------------------------------------------------------------

HELLASWAG = {
    "ind": 24,
    "activity_label": "Roof shingle removal",
    "ctx_a": "A man is sitting on a roof.",
    "ctx_b": "he",
    "ctx": "A man is sitting on a roof. he",
    "split": "val",
    "split_type": "indomain",
    "label": 3,
    "endings": [
        "is using wrap to wrap a pair of skis.",
        "is ripping level tiles off.",
        "is holding a rubik's cube.",
        "starts pulling up roofing on a roof.",
    ],
    "source_id": "activitynet~v_-JhWjGDPHMY",
}
HELLASWAG_WIKIHOW = {
    "ind": 7,
    "activity_label": "Home and Garden",
    "ctx_a": "[header] How to clean a grill [title] Heat the grill.",
    "ctx_b": "then SCRUB the grates",
    "label": "0",
    "endings": ["[step] Use a brush.  It helps.", "Wait [substeps] a day.", "Run.", "Sit."],
}
ARC_HF = {
    "id": "Mercury_7175875",
    "question": "An astronomer observes that a planet rotates faster after a meteorite impact. "
    "Which is the most likely effect of this increase in rotation?",
    "choices": {
        "text": [
            "Planetary density will decrease.",
            "Planetary years will become longer.",
            "Planetary days will become shorter.",
            "Planetary gravity will become stronger.",
        ],
        "label": ["A", "B", "C", "D"],
    },
    "answerKey": "C",
}
ARC_AI2_NUMERIC = {  # AI2's original nesting, with numeric labels as some ARC items have
    "id": "NYSEDREGENTS_2015_4_12",
    "question": {
        "stem": "Which object is magnetic?",
        "choices": [
            {"text": "a wooden spoon", "label": "1"},
            {"text": "an iron nail", "label": "2"},
            {"text": "a glass cup", "label": "3"},
        ],
    },
    "answerKey": "2",
}
PIQA = [
    {"goal": "To open a jar,", "sol1": "twist the lid.", "sol2": "paint the lid."},
    {"goal": "dresser", "sol1": "replace drawer", "sol2": "finish, woodgrain"},
]
WINOGRANDE = {
    "qID": "3D5G8J4N5CI2K40F4RZLF9OG2CKVTH-1",
    "sentence": "Kyle doesn't wear leg warmers to bed, while Logan almost always does. _ is "
    "more likely to live in a colder climate.",
    "option1": "Kyle",
    "option2": "Logan",
    "answer": "2",
}
OPENBOOKQA_AI2: dict[str, Any] = {
    "id": "7-980",
    "question": {
        "stem": "The sun is responsible for",
        "choices": [
            {"text": "puppies learning new tricks", "label": "A"},
            {"text": "children growing up and getting old", "label": "B"},
            {"text": "flowers wilting in a vase", "label": "C"},
            {"text": "plants sprouting, blooming and wilting", "label": "D"},
        ],
    },
    "answerKey": "D",
}
BOOLQ = {
    "question": "is france the same timezone as the uk",
    "title": "Time in France",
    "answer": False,
    "passage": "At the Liberation of France in the summer of 1944, Metropolitan France kept GMT+2.",
}
LAMBADA = {"text": 'He held the cup.\n\nShe said "thanks" and drank the  coffee'}
GSM8K_TRAIN = [
    {
        "question": f"What is {i} + {i}?",
        "answer": f"{i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}.\n#### {2 * i}",
    }
    for i in range(1, 7)
]
GSM8K_TEST = {
    "question": "Tom has 1,200 apples. He sells 200. How many are left?",
    "answer": "1,200 - 200 = 1,000\n#### 1,000",
}

MMLU_HEADER = "question,choice0,choice1,choice2,choice3,answer\n"


def write_mmlu(root: Path, subject: str = "anatomy") -> None:
    (root / "mmlu" / "test").mkdir(parents=True, exist_ok=True)
    (root / "mmlu" / "dev").mkdir(parents=True, exist_ok=True)
    (root / "mmlu" / "test" / f"{subject}_test.csv").write_text(
        MMLU_HEADER + '"  Which bone is in the ""arm""?\n",femur,humerus,tibia,fibula,1\n',
        encoding="utf-8",
    )
    (root / "mmlu" / "dev" / f"{subject}_dev.csv").write_text(
        MMLU_HEADER + "Dev one?,a1,b1,c1,d1,0\nDev two?,a2,b2,c2,d2,3\nDev three?,a3,b3,c3,d3,2\n",
        encoding="utf-8",
    )


# --- per task: the text lm-eval would build -------------------------------------------------------


def test_hellaswag_preprocess_and_capitalize(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "hellaswag_val.jsonl", [HELLASWAG, HELLASWAG_WIKIHOW])
    spec, examples = load_task("hellaswag", task_data=tmp_path)
    assert (spec.kind, spec.random_baseline) == ("multiple_choice", 0.25)
    first, second = mc(examples[0]), mc(examples[1])
    assert first.id == "24" and first.gold == 3
    assert shared_context(first) == "Roof shingle removal: A man is sitting on a roof. He"
    assert [c.continuation for c in first.choices] == [
        " is using wrap to wrap a pair of skis.",
        " is ripping level tiles off.",
        " is holding a rubik's cube.",
        " starts pulling up roofing on a roof.",
    ]
    # " [title]" -> ". ", other [..] dropped, double spaces collapsed; ctx_b.capitalize() lowercases
    # the rest ("SCRUB" -> "scrub"), as Python's str.capitalize does in lm-eval's utils.py.
    assert shared_context(second) == (
        "Home and Garden: How to clean a grill. Heat the grill. Then scrub the grates"
    )
    # The strip comes before "[step]" is dropped, so its space stays: lm-eval scores "  Use...".
    assert [c.continuation for c in second.choices] == [
        "  Use a brush. It helps.",
        " Wait a day.",
        " Run.",
        " Sit.",
    ]
    assert second.gold == 0


def test_hellaswag_prefers_the_full_file_over_the_sample(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "hellaswag_val_sample1000.jsonl", [HELLASWAG])
    assert len(load_task("hellaswag", task_data=tmp_path)[1]) == 1
    write_jsonl(tmp_path / "hellaswag_val.jsonl", [HELLASWAG, HELLASWAG])
    assert len(load_task("hellaswag", task_data=tmp_path)[1]) == 2


def test_arc_hf_schema_and_ai2_nested_schema(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "arc_easy_test.jsonl", [ARC_HF])
    write_jsonl(tmp_path / "arc_challenge_test.jsonl", [ARC_AI2_NUMERIC])
    easy = mc(load_task("arc_easy", task_data=tmp_path)[1][0])
    assert easy.choices[2] == Continuation(
        "Question: An astronomer observes that a planet rotates faster after a meteorite impact. "
        "Which is the most likely effect of this increase in rotation?\nAnswer:",
        " Planetary days will become shorter.",
    )
    assert easy.gold == 2 and easy.id == "Mercury_7175875"
    spec, examples = load_task("arc_challenge", task_data=tmp_path)
    challenge = mc(examples[0])
    assert spec.name == "arc_challenge"
    assert [(c.context, c.continuation) for c in challenge.choices] == [
        ("Question: Which object is magnetic?\nAnswer:", " a wooden spoon"),
        ("Question: Which object is magnetic?\nAnswer:", " an iron nail"),
        ("Question: Which object is magnetic?\nAnswer:", " a glass cup"),
    ]
    assert challenge.gold == 1


def test_piqa_reads_the_labels_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "piqa_valid.jsonl", PIQA)
    (tmp_path / "piqa_valid-labels.lst").write_text("0\n1\n")
    spec, examples = load_task("piqa", task_data=tmp_path)
    assert spec.random_baseline == 0.5
    first, second = mc(examples[0]), mc(examples[1])
    assert first.choices == (
        Continuation("Question: To open a jar,\nAnswer:", " twist the lid."),
        Continuation("Question: To open a jar,\nAnswer:", " paint the lid."),
    )
    assert (first.gold, second.gold) == (0, 1)


def test_winogrande_partial_scoring(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "winogrande_dev.jsonl", [WINOGRANDE])
    example = mc(load_task("winogrande", task_data=tmp_path)[1][0])
    prefix = "Kyle doesn't wear leg warmers to bed, while Logan almost always does. "
    rest = " is more likely to live in a colder climate."
    assert example.choices == (
        Continuation(prefix + "Kyle", rest),
        Continuation(prefix + "Logan", rest),
    )
    assert example.gold == 1


def test_winogrande_answer_from_the_labels_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "winogrande_dev.jsonl", [{**WINOGRANDE, "answer": ""}])
    (tmp_path / "winogrande_dev-labels.lst").write_text("1\n")
    assert mc(load_task("winogrande", task_data=tmp_path)[1][0]).gold == 0


def test_openbookqa_ai2_schema_bare_stem(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "openbookqa_main_test.jsonl", [OPENBOOKQA_AI2])
    example = mc(load_task("openbookqa", task_data=tmp_path)[1][0])
    # openbookqa.yaml: doc_to_text is the bare question_stem (no "Question:"/"Answer:").
    assert shared_context(example) == "The sun is responsible for"
    assert example.choices[3].continuation == " plants sprouting, blooming and wilting"
    assert example.gold == 3


def test_boolq(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "boolq_dev.jsonl", [BOOLQ, {**BOOLQ, "answer": True}])
    examples = load_task("boolq", task_data=tmp_path)[1]
    context = (
        "At the Liberation of France in the summer of 1944, Metropolitan France kept GMT+2.\n"
        "Question: is france the same timezone as the uk?\nAnswer:"
    )
    assert mc(examples[0]).choices == (Continuation(context, " no"), Continuation(context, " yes"))
    assert (mc(examples[0]).gold, mc(examples[1]).gold) == (0, 1)


def test_lambada_splits_on_the_last_space(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "lambada_openai_test.jsonl", [LAMBADA])
    spec, examples = load_task("lambada", task_data=tmp_path)
    assert (spec.kind, spec.random_baseline) == ("last_word", 0.0)
    assert examples == [
        LastWordExample(
            id="0",
            context='He held the cup.\n\nShe said "thanks" and drank the ',
            target=" coffee",
        )
    ]


def test_mmlu_description_letters_and_first_n_shots(tmp_path: Path) -> None:
    write_mmlu(tmp_path)
    question = 'Which bone is in the "arm"?\nA. femur\nB. humerus\nC. tibia\nD. fibula\nAnswer:'
    description = "The following are multiple choice questions (with answers) about anatomy.\n\n"
    spec, examples = load_task("mmlu_anatomy", task_data=tmp_path)
    assert spec.name == "mmlu_anatomy" and spec.random_baseline == 0.25
    example = mc(examples[0])
    assert example.choices == tuple(
        Continuation(description + question, f" {letter}") for letter in "ABCD"
    )
    assert example.gold == 1
    # lm-eval's MMLU uses the first_n sampler: the first K dev questions, in order, any seed.
    shots = (
        "Dev one?\nA. a1\nB. b1\nC. c1\nD. d1\nAnswer: A\n\n"
        "Dev two?\nA. a2\nB. b2\nC. c2\nD. d2\nAnswer: D\n\n"
    )
    for seed in (1234, 7):
        two_shot = mc(load_task("mmlu_anatomy", task_data=tmp_path, num_fewshot=2, seed=seed)[1][0])
        assert two_shot.choices[0].context == description + shots + question


def test_mmlu_csv_keeps_crlf_inside_quoted_fields(tmp_path: Path) -> None:
    # cais/mmlu has "\r\n" inside some questions (college_mathematics dev); lm-eval keeps them.
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    (tmp_path / "mmlu" / "test" / "anatomy_test.csv").write_bytes(
        b'question,choice0,choice1,choice2,choice3,answer\r\n"Which is true?\r\nI. x",a,b,c,d,2\r\n'
    )
    example = mc(load_task("mmlu_anatomy", task_data=tmp_path)[1][0])
    assert (
        "\n\nWhich is true?\r\nI. x\nA. a\nB. b\nC. c\nD. d\nAnswer:" in example.choices[0].context
    )
    assert example.gold == 2


def test_mmlu_multiword_subject_and_berkeley_csv_layout(tmp_path: Path) -> None:
    test_dir = tmp_path / "mmlu" / "test"
    test_dir.mkdir(parents=True)
    # The original Berkeley data.tar layout: no header, letter answers.
    (test_dir / "high_school_biology_test.csv").write_text("What is DNA?,acid,base,salt,sugar,A\n")
    example = mc(load_task("mmlu_high_school_biology", task_data=tmp_path)[1][0])
    assert example.choices[0].context.startswith(
        "The following are multiple choice questions (with answers) about high school biology.\n\n"
        "What is DNA?\nA. acid\n"
    )
    assert example.gold == 0


def test_mmlu_group_and_subject_expansion(tmp_path: Path) -> None:
    for subject in MMLU_SUBJECTS:
        write_mmlu(tmp_path, subject)
    assert expand_task_names("mmlu") == [f"mmlu_{subject}" for subject in MMLU_SUBJECTS]
    spec, examples = load_task("mmlu", task_data=tmp_path, limit=1)
    assert spec.name == "mmlu" and len(examples) == len(MMLU_SUBJECTS) == 57
    assert examples[1].id == "anatomy/0"


def test_gsm8k_fewshot_prompt_and_answer(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "gsm8k_test.jsonl", [GSM8K_TEST])
    write_jsonl(tmp_path / "gsm8k_train.jsonl", GSM8K_TRAIN)
    spec, examples = load_task("gsm8k", task_data=tmp_path, num_fewshot=2, seed=3)
    assert (spec.kind, spec.random_baseline) == ("generative", 0.0)
    # The reference sampler: lm-eval's ContextSampler, random.Random(seed).sample(train docs, K).
    shots = random.Random(3).sample(GSM8K_TRAIN, 2)
    prefix = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
    assert examples == [
        GenerativeExample(
            id="0", prompt=prefix + f"Question: {GSM8K_TEST['question']}\nAnswer:", answer="1000"
        )
    ]


# --- few-shot ----------------------------------------------------------------------------------


def arc_record(i: int) -> dict[str, Any]:
    return {
        "id": f"q{i}",
        "question": f"Question number {i}?",
        "choices": {"text": [f"a{i}", f"b{i}", f"c{i}", f"d{i}"], "label": ["A", "B", "C", "D"]},
        "answerKey": "ABCD"[i % 4],
    }


def test_fewshot_matches_lm_eval_sampler_and_is_deterministic(tmp_path: Path) -> None:
    test = [arc_record(i) for i in range(4)]
    train = [arc_record(100 + i) for i in range(10)]
    write_jsonl(tmp_path / "arc_easy_test.jsonl", test)
    write_jsonl(tmp_path / "arc_easy_train.jsonl", train)
    examples = load_task("arc_easy", task_data=tmp_path, num_fewshot=3)[1]
    # One Random(1234) per task, drawing K train docs for each test doc in order.
    rnd = random.Random(1234)
    for record, example in zip(test, examples, strict=True):
        shots = rnd.sample(train, 3)
        prefix = "".join(
            f"Question: {s['question']}\nAnswer: {s['choices']['text']['ABCD'.index(s['answerKey'])]}\n\n"
            for s in shots
        )
        assert shared_context(mc(example)) == prefix + f"Question: {record['question']}\nAnswer:"
    again = load_task("arc_easy", task_data=tmp_path, num_fewshot=3)[1]
    assert again == examples
    other_seed = load_task("arc_easy", task_data=tmp_path, num_fewshot=3, seed=1)[1]
    assert other_seed != examples
    # `limit` keeps the first N examples with the same shots as the full run.
    assert load_task("arc_easy", task_data=tmp_path, num_fewshot=3, limit=2)[1] == examples[:2]


def test_winogrande_fewshot_uses_the_gold_option(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "winogrande_dev.jsonl", [WINOGRANDE])
    shot = {
        "sentence": "The cup fell off the table because _ was tilted.",
        "option1": "the cup",
        "option2": "the table",
        "answer": "2",
    }
    # The dev example itself sits in the train file: lm-eval draws K+1 and drops it.
    write_jsonl(tmp_path / "winogrande_train_xl.jsonl", [WINOGRANDE, shot])
    for seed in range(6):
        example = mc(load_task("winogrande", task_data=tmp_path, num_fewshot=1, seed=seed)[1][0])
        assert example.choices[0].context == (
            "The cup fell off the table because the table was tilted.\n\n"
            "Kyle doesn't wear leg warmers to bed, while Logan almost always does. Kyle"
        )


def test_draw_extra_tasks_follow_lm_eval_rm_eval_doc(tmp_path: Path) -> None:
    # PIQA (like HellaSwag, Winogrande, BoolQ) has no test split in lm-eval, so its sampler gets the
    # eval doc: Random(seed).sample(pool, K+1), drop docs equal to it, keep the first K.
    goals = [f"goal {i}" for i in range(8)]
    train = [{"goal": g, "sol1": "yes", "sol2": "no"} for g in goals]
    write_jsonl(tmp_path / "piqa_valid.jsonl", train[:4])
    (tmp_path / "piqa_valid-labels.lst").write_text("0\n0\n0\n0\n")
    write_jsonl(tmp_path / "piqa_train.jsonl", train)
    (tmp_path / "piqa_train-labels.lst").write_text("0\n" * 8)
    examples = load_task("piqa", task_data=tmp_path, num_fewshot=2, seed=9)[1]
    rnd = random.Random(9)
    for position, example in enumerate(examples):
        drawn = [g for g in rnd.sample(goals, 3) if g != goals[position]][:2]
        prefix = "".join(f"Question: {g}\nAnswer: yes\n\n" for g in drawn)
        assert mc(example).choices[0].context == prefix + f"Question: {goals[position]}\nAnswer:"


def test_lambada_fewshot_never_uses_the_example_itself(tmp_path: Path) -> None:
    records = [{"text": f"story {i} ends with word{i}"} for i in range(6)]
    write_jsonl(tmp_path / "lambada_openai_test.jsonl", records)
    examples = load_task("lambada", task_data=tmp_path, num_fewshot=2, seed=5)[1]
    rnd = random.Random(5)  # sample K+1 from the test split, drop the doc, keep K
    for position, example in enumerate(examples):
        assert isinstance(example, LastWordExample)
        picked = [i for i in rnd.sample(range(6), 3) if i != position][:2]
        # lm-eval joins text, target delimiter " " and the target " wordN": two spaces.
        prefix = "".join(f"story {i} ends with  word{i}\n\n" for i in picked)
        assert example.context == prefix + f"story {position} ends with"
        assert f"word{position}\n" not in example.context
    assert (
        load_task("lambada", task_data=tmp_path, num_fewshot=2, seed=5, limit=3)[1] == examples[:3]
    )


# --- Hugging Face datasets through the loader seam --------------------------------------------------


def test_hub_loader_on_local_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    # The canonical datasets' schemas: Rowan/hellaswag's label is a string, super_glue boolq's a
    # 0/1 `label`, baber/piqa's an int, cais/mmlu has `choices` and an int `answer`.
    tables: dict[tuple[str, str | None, str], list[dict[str, Any]]] = {
        ("Rowan/hellaswag", None, "validation"): [{**HELLASWAG, "label": "3"}],
        ("allenai/ai2_arc", "ARC-Easy", "test"): [ARC_HF],
        ("baber/piqa", None, "validation"): [{**PIQA[0], "label": 0}],
        ("allenai/winogrande", "winogrande_xl", "validation"): [WINOGRANDE],
        ("allenai/openbookqa", "main", "test"): [
            {
                "id": "7-980",
                "question_stem": "The sun is responsible for",
                "choices": {
                    "text": [c["text"] for c in OPENBOOKQA_AI2["question"]["choices"]],
                    "label": ["A", "B", "C", "D"],
                },
                "answerKey": "D",
            }
        ],
        ("aps/super_glue", "boolq", "validation"): [
            {"question": BOOLQ["question"], "passage": BOOLQ["passage"], "idx": 0, "label": 0}
        ],
        ("EleutherAI/lambada_openai", "default", "test"): [LAMBADA],
        ("cais/mmlu", "anatomy", "test"): [
            {
                "question": '  Which bone is in the "arm"?\n',
                "subject": "anatomy",
                "choices": ["femur", "humerus", "tibia", "fibula"],
                "answer": 1,
            }
        ],
        ("openai/gsm8k", "main", "test"): [GSM8K_TEST],
        ("openai/gsm8k", "main", "train"): GSM8K_TRAIN,
    }
    saved: dict[tuple[str, str | None, str], Path] = {}
    for index, (key, rows) in enumerate(tables.items()):
        saved[key] = tmp_path / "hub" / str(index)
        datasets.Dataset.from_list(rows).save_to_disk(str(saved[key]))
    calls: list[tuple[str, str | None, str]] = []

    def loader(path: str, config: str | None, split: str) -> list[dict[str, Any]]:
        calls.append((path, config, split))
        return [dict(row) for row in datasets.load_from_disk(str(saved[(path, config, split)]))]

    local = tmp_path / "local"
    write_jsonl(local / "hellaswag_val.jsonl", [HELLASWAG])
    write_jsonl(local / "arc_easy_test.jsonl", [ARC_HF])
    write_jsonl(local / "piqa_valid.jsonl", PIQA[:1])
    (local / "piqa_valid-labels.lst").write_text("0\n")
    write_jsonl(local / "winogrande_dev.jsonl", [WINOGRANDE])
    write_jsonl(local / "openbookqa_main_test.jsonl", [OPENBOOKQA_AI2])
    write_jsonl(local / "boolq_dev.jsonl", [BOOLQ])
    write_jsonl(local / "lambada_openai_test.jsonl", [LAMBADA])
    write_mmlu(local)
    write_jsonl(local / "gsm8k_test.jsonl", [GSM8K_TEST])
    write_jsonl(local / "gsm8k_train.jsonl", GSM8K_TRAIN)
    for name in (
        "hellaswag",
        "arc_easy",
        "piqa",
        "winogrande",
        "openbookqa",
        "boolq",
        "lambada",
        "mmlu_anatomy",
    ):
        hub_spec, hub_examples = load_task_from_hub(name, loader=loader)
        local_spec, local_examples = load_task(name, task_data=local)
        assert hub_spec == local_spec
        # Ids differ where the local file has none (BoolQ's idx); the formatted text must not.
        assert [e.choices if isinstance(e, MultipleChoiceExample) else e for e in hub_examples] == [
            e.choices if isinstance(e, MultipleChoiceExample) else e for e in local_examples
        ]
    hub_gsm8k = load_task_from_hub("gsm8k", loader=loader, num_fewshot=2)[1]
    assert hub_gsm8k == load_task("gsm8k", task_data=local, num_fewshot=2)[1]
    assert ("openai/gsm8k", "main", "train") in calls


def test_hub_malformed_record_names_dataset_and_index() -> None:
    def loader(path: str, config: str | None, split: str) -> list[dict[str, Any]]:
        return [ARC_HF, {**ARC_HF, "answerKey": "E"}]

    with pytest.raises(
        ScratchLMError, match=r"allenai/ai2_arc \(ARC-Easy\) test record 1: answerKey 'E'"
    ):
        load_task_from_hub("arc_easy", loader=loader)


# --- names and errors ----------------------------------------------------------------------------


def test_expand_task_names() -> None:
    assert expand_task_names("hellaswag, arc_easy") == ["hellaswag", "arc_easy"]
    assert (
        expand_task_names("core")
        == list(CORE_TASKS)
        == [
            "hellaswag",
            "arc_easy",
            "arc_challenge",
            "piqa",
            "winogrande",
            "openbookqa",
            "boolq",
            "lambada",
        ]
    )
    assert expand_task_names("core,hellaswag,mmlu_anatomy") == [*CORE_TASKS, "mmlu_anatomy"]
    assert len(TASK_NAMES) == 10 + 57 and "mmlu_world_religions" in TASK_NAMES
    with pytest.raises(ScratchLMError) as error:
        expand_task_names("hellaswag,arc_eazy")
    message = str(error.value)
    assert "'arc_eazy'" in message and "did you mean 'arc_easy'" in message
    assert "\n" not in message and "gsm8k" in message and "abstract_algebra" in message
    with pytest.raises(ScratchLMError, match="names no task"):
        expand_task_names(" , ")


def test_unknown_task_in_load_task(tmp_path: Path) -> None:
    with pytest.raises(ScratchLMError, match=r"unknown task 'squad'.*valid tasks: core, hellaswag"):
        load_task("squad", task_data=tmp_path)


def test_missing_file_names_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ScratchLMError) as error:
        load_task("openbookqa", task_data=tmp_path)
    message = str(error.value)
    assert "openbookqa_main_test.jsonl" in message and str(tmp_path) in message
    assert "\n" not in message
    write_jsonl(tmp_path / "arc_easy_test.jsonl", [ARC_HF])
    with pytest.raises(
        ScratchLMError, match=r"few-shot examples need arc_easy_train\.jsonl"
    ) as error:
        load_task("arc_easy", task_data=tmp_path, num_fewshot=1)
    assert "--num-fewshot 0" in str(error.value)
    with pytest.raises(ScratchLMError, match="not a directory"):
        load_task("arc_easy", task_data=tmp_path / "nope")


@pytest.mark.parametrize(
    ("task", "file", "content", "match"),
    [
        (
            "arc_easy",
            "arc_easy_test.jsonl",
            json.dumps(ARC_HF) + "\n{oops\n",
            r"arc_easy_test.jsonl:2: not valid JSON",
        ),
        (
            "hellaswag",
            "hellaswag_val.jsonl",
            json.dumps({**HELLASWAG, "label": 4}),
            r"hellaswag_val.jsonl:1: 'label' 4 is outside 0..3",
        ),
        ("piqa", "piqa_valid.jsonl", json.dumps(PIQA[0]), r"piqa_valid.jsonl:1: no 'label'"),
        (
            "winogrande",
            "winogrande_dev.jsonl",
            json.dumps({**WINOGRANDE, "sentence": "no blank"}),
            r"winogrande_dev.jsonl:1: 'sentence' has no '_'",
        ),
        (
            "boolq",
            "boolq_dev.jsonl",
            json.dumps({"question": "q", "answer": True}),
            r"boolq_dev.jsonl:1: needs a string field 'passage'",
        ),
        (
            "gsm8k",
            "gsm8k_test.jsonl",
            json.dumps({"question": "q", "answer": "no number"}),
            r"gsm8k_test.jsonl:1: 'answer' holds no final number",
        ),
        (
            "mmlu_anatomy",
            "mmlu/test/anatomy_test.csv",
            MMLU_HEADER + "q,a,b,c\n",
            r"anatomy_test.csv:2: 4 columns, expected 6",
        ),
    ],
)
def test_malformed_record_is_one_line_with_file_and_line(
    tmp_path: Path, task: str, file: str, content: str, match: str
) -> None:
    (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / file).write_text(content, encoding="utf-8")
    with pytest.raises(ScratchLMError, match=match) as error:
        load_task(task, task_data=tmp_path)
    assert "\n" not in str(error.value)


def test_labels_file_must_pair_up(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "piqa_valid.jsonl", PIQA)
    (tmp_path / "piqa_valid-labels.lst").write_text("0\n")
    with pytest.raises(ScratchLMError, match="has 1 labels but its data file has 2 records"):
        load_task("piqa", task_data=tmp_path)


def test_bad_fewshot_and_limit(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "arc_easy_test.jsonl", [ARC_HF])
    write_jsonl(tmp_path / "arc_easy_train.jsonl", [ARC_HF])
    with pytest.raises(ScratchLMError, match="--num-fewshot 2 needs 2 examples in its few-shot"):
        load_task("arc_easy", task_data=tmp_path, num_fewshot=2)
    with pytest.raises(ScratchLMError, match="--num-fewshot must be 0 or more"):
        load_task("arc_easy", task_data=tmp_path, num_fewshot=-1)
    with pytest.raises(ScratchLMError, match="--limit must be at least 1"):
        load_task("arc_easy", task_data=tmp_path, limit=0)


# --- GSM8K answer extraction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
        ("#### 1,000", "1000"),
        ("#### -12.5", "-12.5"),
        ("#### 18.", "18"),
        ("#### $1,234", "1234"),
        ("The answer is 42.", "42"),
        ("It costs $1,250.50 in total, then 3 more, so 15.", "15"),
        ("I paid $1,250.", "1250"),
        ("#### 5 but later 9", "5"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_final_number_hand_cases(text: str, expected: str | None) -> None:
    assert extract_final_number(text) == expected


def test_extract_final_number_on_real_gsm8k_answers() -> None:
    path = skip_without_shared_data("gsm8k_train.jsonl")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 7473
    for record in records:
        # The reference: the text after the '#### ' marker, thousands commas removed.
        reference = record["answer"].split("#### ")[-1].strip().replace(",", "")
        assert extract_final_number(record["answer"]) == reference
        # Without the marker, the last number of the worked answer is the final line's number.
        worked = record["answer"].split("\n#### ")[0]
        assert extract_final_number(worked) is not None


# --- the shared copies of the real data --------------------------------------------------------------


def test_smoke_every_shared_task(tmp_path: Path) -> None:
    evals = SHARED_DATA / "evals"
    skip_without_shared_data("evals/README.md")
    loaded: list[str] = []
    for name in TASK_NAMES:
        try:
            spec, examples = load_task(name, task_data=evals, limit=5)
        except ScratchLMError as error:
            assert "--task-data" in str(error), error  # only a missing file may stop a task here
            continue
        loaded.append(name)
        assert spec.name == name and len(examples) == (5 * 57 if name == "mmlu" else 5)
        for example in examples:
            if isinstance(example, MultipleChoiceExample):
                assert 0 <= example.gold < len(example.choices) >= 2
                assert all(c.continuation.startswith(" ") for c in example.choices)
    assert {"hellaswag", "arc_easy", "piqa", "winogrande", "boolq", "lambada", "mmlu"} <= set(
        loaded
    )
    # GSM8K's train copy stands in for its test split to load with few-shot prompts.
    (tmp_path / "gsm8k_test.jsonl").symlink_to(SHARED_DATA / "gsm8k_train.jsonl")
    (tmp_path / "gsm8k_train.jsonl").symlink_to(SHARED_DATA / "gsm8k_train.jsonl")
    examples = load_task("gsm8k", task_data=tmp_path, num_fewshot=5, limit=5)[1]
    assert isinstance(examples[0], GenerativeExample) and examples[0].answer == "72"
    assert examples[0].prompt.count("Question: ") == 6 and examples[0].prompt.endswith("\nAnswer:")
