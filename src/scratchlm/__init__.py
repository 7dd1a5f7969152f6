"""scratchlm: build your own GPT-style language model from scratch.

The Python API (docs/python-api.md); importing it is cheap, torch loads on the first call:

    import scratchlm
    run = scratchlm.train(preset="tiny", data="synthetic:1", max_steps=100, out="runs/tiny")
    lm = scratchlm.load(run)
    print(lm.generate("Once upon a time", max_new_tokens=50, seed=0))
"""

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
