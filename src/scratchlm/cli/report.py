"""`scratchlm report`: one self-contained HTML (and Markdown) page per run."""

from __future__ import annotations

import argparse

from scratchlm.cli.options import add_checkpoint_argument, require_checkpoint


def add_report(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(
        parser,
        "the run directory (the --out of `train`) (required)",
        required=False,
        metavar="RUN_DIR",
    )
    # The run directory as a positional argument (its spelling before --checkpoint), kept for
    # scripts and not shown.
    parser.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", help="output directory or NAME.html (none: into the run directory)"
    )
    parser.add_argument(
        "--no-bench", action="store_true", help="skip the inference speed measurement"
    )
    parser.add_argument(
        "--bench-tokens", type=int, default=32, help="tokens to decode when measuring speed"
    )


def command_report(args: argparse.Namespace) -> None:
    from scratchlm.report import write_report

    if args.run_dir is not None and args.checkpoint is None:
        args.checkpoint = args.run_dir
    paths = write_report(
        require_checkpoint(args, "report"),
        out=args.out,
        bench=not args.no_bench,
        bench_tokens=args.bench_tokens,
    )
    print(f"wrote {paths.html}")
    print(f"wrote {paths.markdown}")
    if paths.speed.error:
        print(f"inference speed not measured: {paths.speed.error}")
