"""`scratchlm quickstart`: from nothing to a model that writes stories, within a time budget.

Steps: generate the built-in story corpus (offline, deterministic), train a BPE tokenizer on it,
train a small model for most of the budget, then print samples and the next commands to try.
The corpus is simple on purpose: in a few CPU-minutes a ~1M parameter model learns its grammar
and plots, which a real web corpus would need hours for.
"""

from __future__ import annotations

import time
from pathlib import Path

from scratchlm.errors import ScratchLMError
from scratchlm.inference.engine import Engine
from scratchlm.inference.sampling import SamplingSettings
from scratchlm.training.checkpoint import load_checkpoint
from scratchlm.training.run_config import TrainConfig
from scratchlm.training.trainer import Trainer

SAMPLE_PROMPTS = ("Once upon a time", "One day, a little", "The dog")
# Seconds kept back from the budget for tokenizer training, data preparation, evaluation and
# samples, measured on a 2-core CPU (the first run also generates the corpus).
SETUP_RESERVE_S = 40.0


def run_quickstart(
    *,
    out: Path,
    minutes: float = 5.0,
    preset: str = "tiny",
    seed: int = 1337,
    device: str = "auto",
    corpus_mb: int = 20,
    vocab_size: int = 2048,
) -> Path:
    if minutes <= 0:
        raise ScratchLMError(f"--minutes must be positive, got {minutes}")
    started = time.perf_counter()
    if (out / "latest").exists() or (out / "checkpoints").exists():
        raise ScratchLMError(
            f"{out} already holds a quickstart run; remove it, or pass --out with a new directory "
            f"(its model stays usable: scratchlm generate --checkpoint {out})"
        )
    print(f"scratchlm quickstart: {minutes:g} minutes, preset {preset}, output {out}/")
    print("1/3 corpus and tokenizer: built-in synthetic stories (offline, deterministic)")
    config = TrainConfig(
        preset=preset,
        data=f"synthetic:{corpus_mb}",
        tokenizer="bpe",
        vocab_size=vocab_size,
        tokenizer_sample_chars=5_000_000,
        val_fraction=0.02,
        out=str(out),
        seed=seed,
        device=device,
        eval_every=250,
        eval_tokens=32768,
        save_every=500,
        sample_tokens=48,
        sample_prompt="Once upon a time",
        warmup_steps=50,
        max_time=f"{minutes * 60:.0f}s",  # narrowed below once setup time is known
    )
    trainer = Trainer(config)
    setup_s = time.perf_counter() - started
    train_s = max(10.0, minutes * 60 - setup_s - SETUP_RESERVE_S / 2)
    trainer.max_time = train_s
    trainer.max_steps = None
    trainer.config.max_time = f"{train_s:.0f}s"
    print(f"2/3 training for {train_s:.0f}s (setup took {setup_s:.0f}s)")
    result = trainer.run()
    print(
        f"    {result.steps} steps, {result.tokens:,} tokens, {result.tokens_per_s:,.0f} tokens/s, "
        f"best validation loss {result.best_val_loss:.3f}"
    )
    print("3/3 samples from the best checkpoint (temperature 0.7):")
    loaded = load_checkpoint(out)
    engine = Engine(loaded.model)
    for index, prompt in enumerate(SAMPLE_PROMPTS):
        ids = list(
            engine.generate(
                loaded.tokenizer.encode(prompt),
                max_new_tokens=120,
                sampling=SamplingSettings(temperature=0.7, top_k=40),
                seed=seed + index,
                stop_ids=frozenset({loaded.tokenizer.eos_id}),
            )
        )
        print(f"\n--- {prompt!r}\n{prompt}{loaded.tokenizer.decode(ids, skip_special=True)}")
    total = time.perf_counter() - started
    print(f"\ndone in {total / 60:.1f} minutes. Next:")
    print(f'  scratchlm generate --checkpoint {out} --prompt "Once upon a time" --temperature 0.7')
    print(f"  scratchlm eval --checkpoint {out} --data <text file>")
    print(f"  scratchlm info --checkpoint {out}")
    print(
        "  scratchlm train --preset tiny --tokenizer char --data shakespeare --max-time 5m --out runs/shakespeare"
    )
    return out
