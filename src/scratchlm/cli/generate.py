"""The commands that run a model: `generate` and `bench`."""

from __future__ import annotations

import argparse
import sys

from scratchlm.cli.options import (
    add_checkpoint_argument,
    add_device_argument,
    add_quantize_argument,
    add_sampling_arguments,
    add_skip_checksums_argument,
    add_threads_argument,
    print_json,
    sampling_from_args,
)
from scratchlm.errors import ScratchLMError

# --- generate -------------------------------------------------------------------------------------


def add_generate(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument(
        "-p", "--prompt", default="", help="text to continue (default: start of a document)"
    )
    add_sampling_arguments(parser)
    parser.add_argument(
        "--stop", action="append", metavar="TEXT", help="stop when this text appears (repeatable)"
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="independent samples (seeds seed, seed+1, ...) or best beams",
    )
    parser.add_argument("--beam-width", type=int, default=4, help="beams for --sampler beam")
    parser.add_argument(
        "--length-penalty", type=float, default=1.0, help="beam score = log-prob / length**penalty"
    )
    parser.add_argument(
        "--draft-checkpoint", help="a small model with the same tokenizer, for speculative decoding"
    )
    parser.add_argument(
        "--draft-tokens", type=int, default=4, help="tokens the draft proposes per target pass"
    )
    parser.add_argument(
        "--truncate",
        action="store_true",
        help="drop the oldest prompt tokens if the prompt is too long",
    )
    add_quantize_argument(parser)
    add_threads_argument(parser)
    add_skip_checksums_argument(parser)
    add_device_argument(parser)


def command_generate(args: argparse.Namespace) -> None:
    from scratchlm.inference.beam import beam_search
    from scratchlm.inference.engine import Engine
    from scratchlm.inference.load import load_for_inference

    loaded, device = load_for_inference(
        args.checkpoint,
        args.device,
        args.quantize,
        verify=not args.skip_checksums,
        kv_cache=args.kv_cache,
    )
    tokenizer = loaded.tokenizer
    settings = sampling_from_args(args)
    prompt_ids = tokenizer.encode(args.prompt) if args.prompt else [tokenizer.eos_id]
    stop_ids = frozenset({tokenizer.eos_id})
    if args.num_samples < 1:
        raise ScratchLMError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.sampler == "beam":
        results = beam_search(
            loaded.model,
            prompt_ids,
            beam_width=max(args.beam_width, args.num_samples),
            max_new_tokens=args.max_new_tokens,
            length_penalty=args.length_penalty,
            stop_ids=stop_ids,
            truncate=args.truncate,
        )
        for rank, result in enumerate(results[: args.num_samples], start=1):
            if args.num_samples > 1:
                print(
                    f"--- beam {rank}: score {result.score:.4f} (log-probability {result.log_probability:.3f})"
                )
            print(
                args.prompt
                + _cut_at_stop(tokenizer.decode(result.token_ids, skip_special=True), args.stop)
            )
        return
    draft = None
    if args.draft_checkpoint:
        from scratchlm.checkpoint import load_checkpoint

        draft = load_checkpoint(args.draft_checkpoint, device, verify=not args.skip_checksums)
        if draft.tokenizer.fingerprint() != tokenizer.fingerprint():
            raise ScratchLMError(
                "--draft-checkpoint uses a different tokenizer; the draft must share the target's tokenizer"
            )
    engine = Engine(loaded.model, device=device)
    for sample in range(args.num_samples):
        seed = None if args.seed is None else args.seed + sample
        if args.num_samples > 1:
            print(f"--- sample {sample + 1}")
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
        if draft is not None:
            from scratchlm.inference.speculative import SpeculativeStats, speculative_text

            stats = SpeculativeStats()
            pieces = speculative_text(
                loaded.model,
                draft.model,
                tokenizer,
                prompt_ids,
                max_new_tokens=args.max_new_tokens,
                sampling=settings,
                draft_tokens=args.draft_tokens,
                seed=seed,
                stop_ids=stop_ids,
                stop_strings=args.stop or [],
                stats=stats,
            )
        else:
            pieces = engine.stream_text(
                tokenizer,
                prompt_ids,
                max_new_tokens=args.max_new_tokens,
                sampling=settings,
                seed=seed,
                stop_ids=stop_ids,
                stop_strings=args.stop or [],
                truncate=args.truncate,
            )
        for text in pieces:
            sys.stdout.write(text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        if draft is not None:
            print(
                f"[speculative: {stats.accepted}/{stats.drafted} drafted tokens accepted "
                f"({stats.acceptance_rate:.0%}) in {stats.rounds} target passes]",
                file=sys.stderr,
            )
        elif engine.truncated_tokens:
            print(
                f"[the prompt was cut: its first {engine.truncated_tokens} tokens were dropped]",
                file=sys.stderr,
            )


def _cut_at_stop(text: str, stops: list[str] | None) -> str:
    cuts = [text.find(stop) for stop in stops or [] if stop and stop in text]
    return text[: min(cuts)] if cuts else text


# --- bench ----------------------------------------------------------------------------------------


def add_bench(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    add_checkpoint_argument(source, required=False)
    source.add_argument("--preset", help="a preset with random weights")
    parser.add_argument("--prompt-tokens", type=int, default=128, help="prompt length")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens to decode")
    parser.add_argument(
        "--batch-size",
        type=int,
        nargs="+",
        default=[1, 8],
        help="batch sizes to decode at (aggregate tokens/s)",
    )
    parser.add_argument(
        "--num-runs", type=int, default=3, help="runs per measurement (median reported)"
    )
    add_device_argument(parser)
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="weights dtype (auto: bf16/fp16 on GPU, fp32 on CPU)",
    )
    add_threads_argument(parser)
    add_quantize_argument(parser)
    add_skip_checksums_argument(parser)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--json", action="store_true", help="print JSON")


def command_bench(args: argparse.Namespace) -> None:
    import torch

    from scratchlm.inference.bench import run_benchmark

    if args.checkpoint:
        from scratchlm.inference.load import load_for_inference

        loaded, device = load_for_inference(
            args.checkpoint, args.device, verify=not args.skip_checksums
        )
        model = loaded.model
    else:
        from scratchlm.config import preset_config
        from scratchlm.device import select_device
        from scratchlm.model import build_model

        device = select_device(args.device)
        torch.manual_seed(0)
        model = build_model(preset_config(args.preset), device)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if args.precision != "auto":
        model.to(dtypes[args.precision])
    elif device.type == "cuda":
        model.to(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    model.eval()
    from scratchlm.inference.quantize import quantize_for_cpu

    model = quantize_for_cpu(model, args.quantize)
    if args.kv_cache != "fp32":
        from scratchlm.kv_cache import set_cache_dtype

        set_cache_dtype(model, args.kv_cache)
    if args.compile:
        # A quantized model gets plain fp32 weights at its first decode: the kernel declines a
        # replaced forward, and fast_decoder then holds them (compiled graphs read plain ones).
        model.forward = torch.compile(model.forward, dynamic=True)  # type: ignore[method-assign]
    result = run_benchmark(
        model,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        batch_sizes=tuple(args.batch_size),
        num_runs=args.num_runs,
    )
    values = result.as_dict()
    if args.json:
        print_json(values)
        return
    print(
        f"model: {values['n_params']:,} parameters, {values['dtype']} on {values['device']}; "
        f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, median of {args.num_runs} runs"
    )
    print(f"prefill:             {values['prefill_tokens_per_s']:>12,.0f} tokens/s")
    print(f"time to first token: {values['time_to_first_token_s'] * 1000:>12,.1f} ms")
    print(f"decode (batch 1):    {values['decode_tokens_per_s']:>12,.1f} tokens/s")
    for batch, rate in result.batched_decode_tokens_per_s.items():
        print(f"decode (batch {batch:>2}):   {rate:>12,.1f} tokens/s aggregate")
    print(f"peak memory:         {values['peak_memory_bytes'] / 2**20:>12,.1f} MiB")
