"""Time of the 5th turn of a chat with the KV cache kept across turns vs rebuilt each turn.

.venv/bin/python benchmarks/chat_turns.py --checkpoint quickstart/chat
"""

from __future__ import annotations

import argparse
import statistics
import time

from scratchlm.chat_template import Message, end_of_turn_id, render
from scratchlm.checkpoint import load_checkpoint
from scratchlm.inference.session import DecodeSession
from scratchlm.inference.settings import SamplingSettings

QUESTIONS = [
    "Tell me a story about a cat who finds a ball.",
    "What color was the ball?",
    "Give the story a title.",
    "Tell me another story about a dog.",
    "Who was the friend in that story?",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--reply-tokens", type=int, default=48)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    loaded = load_checkpoint(args.checkpoint)
    tokenizer = loaded.tokenizer
    settings = SamplingSettings(temperature=0.0, top_k=None)
    stops = frozenset({end_of_turn_id(tokenizer), tokenizer.eos_id})
    timings: dict[bool, list[float]] = {True: [], False: []}
    first_tokens: dict[bool, list[float]] = {True: [], False: []}
    prefills: dict[bool, int] = {}
    for _ in range(args.runs):
        for reuse in (True, False):
            session = DecodeSession(loaded.model)
            messages: list[Message] = []
            for turn, question in enumerate(QUESTIONS):
                messages.append({"role": "user", "content": question})
                prompt, _ = render(messages, tokenizer, add_generation_prompt=True)
                if not reuse:
                    session.reset()  # rebuild: prefill the whole history
                started = time.perf_counter()
                reply: list[int] = []
                first_token_at = 0.0
                tokens = session.generate(
                    prompt, max_new_tokens=args.reply_tokens, sampling=settings, stop_ids=stops
                )
                for token in tokens:
                    if not reply:
                        first_token_at = time.perf_counter() - started
                    reply.append(token)
                elapsed = time.perf_counter() - started
                messages.append(
                    {"role": "assistant", "content": tokenizer.decode(reply, skip_special=True)}
                )
                if turn == len(QUESTIONS) - 1:
                    timings[reuse].append(elapsed)
                    first_tokens[reuse].append(first_token_at)
                    prefills[reuse] = session.last_prefill
    with_reuse, without = statistics.median(timings[True]), statistics.median(timings[False])
    print(
        f"5th turn, {args.reply_tokens}-token replies at most, median of {args.runs}: "
        f"KV reuse {with_reuse * 1000:.1f} ms (prefilled {prefills[True]} tokens) vs rebuilt "
        f"{without * 1000:.1f} ms (prefilled {prefills[False]}) -> {without / with_reuse:.2f}x"
    )
    first_reuse = statistics.median(first_tokens[True])
    first_without = statistics.median(first_tokens[False])
    print(
        f"time to first token of the 5th turn: KV reuse {first_reuse * 1000:.1f} ms vs rebuilt "
        f"{first_without * 1000:.1f} ms -> {first_without / first_reuse:.2f}x"
    )


if __name__ == "__main__":
    main()
