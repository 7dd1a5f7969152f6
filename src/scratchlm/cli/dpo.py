"""`scratchlm dpo`: preference-tune a chat checkpoint on chosen/rejected pairs (DPO, IPO, SimPO).

The flags are finetune's (the training settings less those the checkpoint fixes, the LoRA flags)
plus --loss, --beta and --simpo-gamma; the run directory, checkpoints and resume are finetune's.
"""

from __future__ import annotations

import argparse

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
    DPO_DEFAULT_BETA,
    DPO_DEFAULTS,
    DPO_EXCLUDED,
    DPO_FULL_LR,
    DPO_LORA_LR,
    DPO_LOSSES,
    DPO_TYPES,
    FINETUNE_DEFAULTS,
    FINETUNE_EXCLUDED,
    FINETUNE_MAX_STEPS,
    LORA_TYPES,
    SIMPO_DEFAULT_BETA,
)

DATA_HELP = (
    "preference pairs: .jsonl, .jsonl.gz, .json array or hf:NAME of {prompt, chosen, rejected}, "
    "{instruction, input, chosen, rejected}, or chosen/rejected conversations (required)"
)


def add_dpo(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser, "the starting (SFT) checkpoint or run directory")
    # Defaults SUPPRESSed (shown in the help): a --config file may set them, flags override it.
    parser.add_argument(
        "--loss",
        choices=DPO_LOSSES,
        default=argparse.SUPPRESS,
        help="preference loss: sigmoid (DPO, Rafailov et al. 2023), ipo (Azar et al. 2023) or "
        "simpo (reference-free, Meng et al. 2024) (default: sigmoid)",
    )
    parser.add_argument(
        "--beta",
        type=float,
        default=argparse.SUPPRESS,
        help=f"strength of the preference against the starting model (default: {DPO_DEFAULT_BETA}"
        f"; {SIMPO_DEFAULT_BETA} for --loss simpo, SimPO's scale of average log-probs)",
    )
    parser.add_argument(
        "--simpo-gamma",
        type=float,
        default=argparse.SUPPRESS,
        help=f"SimPO's target reward margin, --loss simpo only (default: {DPO_DEFAULTS['simpo_gamma']})",
    )
    add_lora_arguments(parser)
    add_train_arguments(
        parser,
        exclude=DPO_EXCLUDED,
        shown_defaults={
            **FINETUNE_DEFAULTS,
            "lr": f"{DPO_FULL_LR:g} full, {DPO_LORA_LR:g} LoRA",
            "max_steps": f"{FINETUNE_MAX_STEPS} when no --max-tokens or --max-time is given",
            "batch_size": "16 pairs per micro-batch (each a chosen and a rejected row)",
            "data": "required",
        },
    )
    for action in parser._actions:
        if action.dest == "data":
            action.help = DATA_HELP
    add_print_config_argument(parser)


def command_dpo(args: argparse.Namespace) -> None:
    from scratchlm.training.run_config import read_config_file

    config_file = (
        read_config_file(
            args.config,
            extra={**LORA_TYPES, **DPO_TYPES},
            refused={
                name: (
                    "does not apply to dpo: the model and its tokenizer come from --checkpoint"
                    if name in FINETUNE_EXCLUDED
                    else "does not apply to dpo: preference pairs are records, not text, and "
                    "the loss weighs whole replies"
                )
                + "; remove it from the file"
                for name in DPO_EXCLUDED
            },
        )
        if getattr(args, "config", None)
        else {}
    )
    if "data" not in vars(args) and "data" not in config_file:
        raise ScratchLMError(
            "dpo needs --data: preference pairs ({prompt, chosen, rejected}, {instruction, "
            "input, chosen, rejected} or chosen/rejected conversations)"
        )
    config = resolve_train_config(args, FINETUNE_DEFAULTS, file_values=config_file)
    if config.max_steps is None and config.max_tokens is None and config.max_time is None:
        config.max_steps = FINETUNE_MAX_STEPS
    from scratchlm.finetune.dpo import DPOSettings

    values = own_values(DPO_DEFAULTS, args, config_file)
    settings = DPOSettings(
        loss=values["loss"], beta=values["beta"], simpo_gamma=values["simpo_gamma"]
    )
    lora = lora_from_args(args, config_file)  # a bad LoRA setting fails here
    if args.print_config:
        config.validate()
        shown = {key: value for key, value in config.to_dict().items() if key not in DPO_EXCLUDED}
        print_config({**shown, **lora_values(args, config_file), **values})
        return
    from scratchlm.finetune.dpo import dpo

    result = dpo(config, base=args.checkpoint, settings=settings, lora=lora)
    exit_if_stopped_by_signal(result)
    best = result.best_val_loss
    print(
        f"done: {result.steps} steps in {result.elapsed_s:.0f}s; best val {settings.loss} loss "
        f"{best if best is None else round(best, 4)}"
    )
    if result.before and result.after:
        print(
            "held-out preference accuracy (policy log-prob of chosen > rejected): "
            f"{result.before['val_preference_accuracy']:.3f} before -> "
            f"{result.after['val_preference_accuracy']:.3f} after; reward accuracy "
            f"{result.after['val_reward_accuracy']:.3f}, margin "
            f"{result.after['val_reward_margin']:.4f}"
        )
    print(f"checkpoint: {result.checkpoint}   (best: {result.run_dir / 'best'})")
    print(f"next: scratchlm chat --checkpoint {result.run_dir}")
