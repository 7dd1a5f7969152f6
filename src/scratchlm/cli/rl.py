"""`scratchlm rl`: reinforcement learning from verifiable rewards (GRPO-style) on a chat checkpoint.

The flags are finetune's training settings less those that do not apply (the prompts come from
--task, not --data; the evaluation is pass@k on held-out problems, not a validation loss; loss
spikes mean nothing for a policy-gradient loss), the LoRA flags, and rl's own (RL_DEFAULTS). A
training flag that does not apply is refused with the reason, not ignored.
"""

from __future__ import annotations

import argparse
from typing import Any

from scratchlm.cli.options import add_checkpoint_argument, add_train_arguments, resolve_train_config
from scratchlm.cli.train import (
    add_lora_arguments,
    add_print_config_argument,
    exit_if_stopped_by_signal,
    lora_from_args,
    lora_values,
    own_values,
    print_config,
)
from scratchlm.errors import ScratchLMError
from scratchlm.finetune.settings import (
    FINETUNE_EXCLUDED,
    LORA_TYPES,
    RL_DEFAULTS,
    RL_EXCLUDED,
    RL_MAX_STEPS,
    RL_TRAIN_DEFAULTS,
    RL_TYPES,
)
from scratchlm.finetune.tasks import TASK_NAMES, TASKS

# Why a training setting does not apply to rl (the rest of RL_EXCLUDED: the checkpoint fixes it).
NOT_FOR_RL = {
    "data": "the problems come from --task (a file of your own: --task file --task-data FILE)",
    "val_data": "the held-out problems come from --task (--eval-problems of them)",
    "val_fraction": "the task keeps its own held-out split",
    "text_field": "the prompts come from --task (--task file reads prompt/question and answer)",
    "ascii_only": "the prompts come from --task",
    "data_workers": "the prompts come from --task",
    "token_weighting": "the loss weighs each reply token by its advantage",
    "token_weighting_power": "the loss weighs each reply token by its advantage",
    "micro_batch": "--batch-size sets the rows per forward pass",
    "tokens_per_step": "a step is --prompts-per-step x --group-size replies",
    "max_tokens": "a step is --prompts-per-step x --group-size replies; use --max-steps or --max-time",
    "eval_tokens": "the evaluation is pass@k on --eval-problems held-out problems",
    "sample_tokens": "the evaluation's sample is a held-out problem and its greedy reply",
    "sample_prompt": "the evaluation's sample is a held-out problem and its greedy reply",
    "spike_factor": "a policy-gradient loss hovers around 0 and changes sign: no spikes to catch",
    "spike_window": "a policy-gradient loss hovers around 0 and changes sign: no spikes to catch",
    "spike_lr_factor": "a policy-gradient loss hovers around 0 and changes sign: no spikes to catch",
    "max_backtracks": "a policy-gradient loss hovers around 0 and changes sign: no spikes to catch",
}
REFUSED_DEST = "_rl_refused"


def refusal(name: str) -> str:
    if name in NOT_FOR_RL:
        return f"does not apply to rl: {NOT_FOR_RL[name]}"
    return "does not apply to rl: the model and its tokenizer come from --checkpoint"


def task_help() -> str:
    described = "; ".join(f"{name}: {task.description}" for name, task in TASKS.items())
    return (
        f"the verifiable task (required): {described}; file: problems from --task-data "
        '(records with "prompt" or "question" and "answer")'
    )


class _Refuse(argparse.Action):
    """A training flag rl does not take: accepted by the parser (so that the error is one line
    with the reason, not argparse's usage dump) and refused by the command."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        refused = getattr(namespace, REFUSED_DEST, None) or []
        setattr(namespace, REFUSED_DEST, [*refused, self.dest])


def add_rl(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser, "the starting (SFT chat) checkpoint or run directory")
    # Not argparse choices: a mistyped task is then our one-line error, not a usage dump.
    parser.add_argument(
        "--task",
        metavar="{" + ",".join(TASK_NAMES) + "}",
        default=argparse.SUPPRESS,
        help=task_help(),
    )
    rl_flags: list[tuple[str, Any, str]] = [
        ("--task-data", str, "--task file: the problems file; --task gsm8k: other GSM8K records"),
        (
            "--reward",
            str,
            "reward function: number, exact, contains, format, regex:PATTERN, module:function "
            "or path/to/file.py:function (default: the task's own)",
        ),
        ("--prompts-per-step", int, "problems per optimizer step"),
        ("--group-size", int, "replies sampled per problem (the group of its baseline)"),
        ("--temperature", float, "sampling temperature of the replies"),
        ("--max-new-tokens", int, "longest reply, in tokens"),
        (
            "--updates-per-batch",
            int,
            "optimizer steps per sampled batch (> 1: PPO's clipped ratio to the sampling policy)",
        ),
        ("--clip", float, "PPO clip range of the ratio, with --updates-per-batch > 1"),
        ("--kl", float, "KL penalty coefficient to the starting model (0 = none)"),
        ("--train-problems", int, "training problems drawn from the task (the cursor's pool)"),
        ("--eval-problems", int, "held-out problems scored at each evaluation"),
        ("--pass-k", int, "k of the pass@k evaluation (default: --group-size)"),
        ("--eval-samples", int, "samples per held-out problem for pass@k (default: --pass-k)"),
    ]
    for flag, kind, help_text in rl_flags:
        name = flag[2:].replace("-", "_")
        default = RL_DEFAULTS[name]
        if "(default:" not in help_text and default is not None:
            help_text = f"{help_text} (default: {default})"
        parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)
    parser.add_argument(
        "--no-std",
        action="store_true",
        default=argparse.SUPPRESS,
        help="advantages r - group mean, without dividing by the group's std (nanochat's choice)",
    )
    add_lora_arguments(parser)
    add_train_arguments(
        parser,
        exclude=RL_EXCLUDED,
        shown_defaults={
            **{k: v for k, v in RL_TRAIN_DEFAULTS.items() if k not in RL_EXCLUDED},
            "lr": "1e-4 full, 5e-4 LoRA",
            "max_steps": f"{RL_MAX_STEPS} when no --max-time is given",
            "batch_size": "16 rows (prompt + reply) per forward pass",
        },
    )
    for name in sorted(RL_EXCLUDED - FINETUNE_EXCLUDED):
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            action=_Refuse,
            nargs="?",
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
    add_print_config_argument(parser)


def command_rl(args: argparse.Namespace) -> None:
    from scratchlm.training.run_config import read_config_file

    refused = getattr(args, REFUSED_DEST, None)
    if refused:
        name = refused[0]
        raise ScratchLMError(f"--{name.replace('_', '-')} {refusal(name)}; drop it")
    config_file = (
        read_config_file(
            args.config,
            extra={**LORA_TYPES, **RL_TYPES},
            refused={name: refusal(name) + "; remove it from the file" for name in RL_EXCLUDED},
        )
        if getattr(args, "config", None)
        else {}
    )
    values = own_values(RL_DEFAULTS, args, config_file)
    if values["task"] is None:
        raise ScratchLMError(f"rl needs --task: one of {', '.join(TASK_NAMES)}")
    if values["task"] not in TASK_NAMES:
        raise ScratchLMError(
            f"unknown --task {values['task']!r}; choose one of {', '.join(TASK_NAMES)}"
        )
    config = resolve_train_config(args, RL_TRAIN_DEFAULTS, file_values=config_file)
    if config.max_steps is None and config.max_time is None:
        config.max_steps = RL_MAX_STEPS
    # The task and reward resolve now: a bad --reward or --task-data fails before any model loads.
    from scratchlm.finetune.rewards import resolve_reward
    from scratchlm.finetune.tasks import load_task

    task = load_task(values["task"], values["task_data"])
    reward = resolve_reward(values["reward"], task)
    lora = lora_from_args(args, config_file)  # a bad LoRA setting fails here
    from scratchlm.finetune.rl import RLSettings

    settings = RLSettings(**values)
    if args.print_config:
        config.validate()
        shown = {key: value for key, value in config.to_dict().items() if key not in RL_EXCLUDED}
        print_config({**shown, **lora_values(args, config_file), **values})
        return
    from scratchlm.finetune.rl import rl

    result = rl(
        config, base=args.checkpoint, settings=settings, lora=lora, task=task, reward=reward
    )
    exit_if_stopped_by_signal(result)
    print(f"done: {result.steps} steps in {result.elapsed_s / 60:.1f} min")
    if result.before and result.after:
        k = result.after["pass_k"]
        print(
            f"held-out pass@1 {result.before['pass@1']:.3f} -> {result.after['pass@1']:.3f} "
            f"(sampled {result.before['sampled_pass@1']:.3f} -> "
            f"{result.after['sampled_pass@1']:.3f}), "
            f"pass@{k} {result.before['pass@k']:.3f} -> {result.after['pass@k']:.3f}, "
            f"mean reward {result.before['reward_mean']:.3f} -> "
            f"{result.after['reward_mean']:.3f} (before -> after)"
        )
    print(f"checkpoint: {result.checkpoint}   (best: {result.run_dir / 'best'}, by pass@1)")
    print(f"next: scratchlm chat --checkpoint {result.run_dir}")
