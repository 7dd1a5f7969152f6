"""Fine-tuning: supervised chat data with loss masks, LoRA, and the fine-tuning trainer.

The package is also the Python API's `scratchlm.finetune(checkpoint, **settings)`: the function
(`scratchlm.api.finetune`) and this package share the name, and the import system sets
`scratchlm.finetune` to the package whenever a module of it is imported, so the package itself
forwards calls (a module may set its `__class__` to a ModuleType subclass, for this kind of use).
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, checkpoint: str | os.PathLike[str], **settings: Any) -> Path:
        from scratchlm.api import finetune

        return finetune(checkpoint, **settings)


sys.modules[__name__].__class__ = _CallablePackage
