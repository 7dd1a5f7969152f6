"""scratchlm: build your own GPT-style language model from scratch.

The Python API (docs/python-api.md); importing it is cheap, torch loads on the first call:

    import scratchlm
    run = scratchlm.train(preset="tiny", data="synthetic:1", max_steps=100, out="runs/tiny")
    lm = scratchlm.load(run)
    print(lm.generate("Once upon a time", max_new_tokens=50, seed=0))
"""

import os

# PyTorch's OpenMP (GNU libgomp) workers spin-wait for a while after every parallel region
# (300,000 spins by default). Decoding alternates PyTorch ops (sampling, bookkeeping) with our CPU
# kernels' own thread team, and the spinning workers took a core from that team: on 2 cores,
# continuous batching at 8 rows went from about 750 to 1,200 tokens/s with a short spin, and
# training speed did not change (docs/benchmarks.md, "Rerun after three fixes"). libgomp reads the
# variable once, when torch loads; importing scratchlm before torch sets it, and a value the user
# set wins.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from scratchlm import finetune  # the package, callable as the API's finetune (see its docstring)
from scratchlm.api import LanguageModel, Score, dpo, load, rl, train, train_config
from scratchlm.errors import ScratchLMError

__version__ = "0.1.0"
__all__ = [
    "LanguageModel",
    "Score",
    "ScratchLMError",
    "__version__",
    "dpo",
    "finetune",
    "load",
    "rl",
    "train",
    "train_config",
]
