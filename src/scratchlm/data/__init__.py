"""The data pipeline: sources -> cleaning -> parallel tokenization -> token shards -> batches.

Names are imported on first use (PEP 562): tokenizer worker processes import this package when they
start, and loading torch there (through `loader`) would cost each of them seconds and hundreds of MB.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scratchlm.data.cleaning import (
        CleaningCounts,
        CleaningOptions,
        DocumentFilter,
        clean_documents,
        clean_piece,
        clean_text,
    )
    from scratchlm.data.download import cached_download_path, download
    from scratchlm.data.loader import TokenWindowLoader, iter_eval_batches
    from scratchlm.data.prepare import prepare_cached, prepare_dataset
    from scratchlm.data.shards import (
        MANIFEST_NAME,
        ShardWriter,
        TokenShards,
        read_manifest,
        token_dtype,
    )
    from scratchlm.data.sources import (
        SHORTCUTS,
        Document,
        SplitNotFound,
        default_cache_root,
        iter_documents,
        resolve_source,
        sample_text,
        source_identity,
    )

_MODULE_OF = {
    "CleaningCounts": "cleaning",
    "CleaningOptions": "cleaning",
    "DocumentFilter": "cleaning",
    "clean_documents": "cleaning",
    "clean_piece": "cleaning",
    "clean_text": "cleaning",
    "cached_download_path": "download",
    "download": "download",
    "TokenWindowLoader": "loader",
    "iter_eval_batches": "loader",
    "prepare_cached": "prepare",
    "prepare_dataset": "prepare",
    "MANIFEST_NAME": "shards",
    "ShardWriter": "shards",
    "TokenShards": "shards",
    "read_manifest": "shards",
    "token_dtype": "shards",
    "SHORTCUTS": "sources",
    "Document": "sources",
    "SplitNotFound": "sources",
    "default_cache_root": "sources",
    "iter_documents": "sources",
    "resolve_source": "sources",
    "sample_text": "sources",
    "source_identity": "sources",
}

__all__ = [
    "MANIFEST_NAME",
    "SHORTCUTS",
    "CleaningCounts",
    "CleaningOptions",
    "Document",
    "DocumentFilter",
    "ShardWriter",
    "SplitNotFound",
    "TokenShards",
    "TokenWindowLoader",
    "cached_download_path",
    "clean_documents",
    "clean_piece",
    "clean_text",
    "default_cache_root",
    "download",
    "iter_documents",
    "iter_eval_batches",
    "prepare_cached",
    "prepare_dataset",
    "read_manifest",
    "resolve_source",
    "sample_text",
    "source_identity",
    "token_dtype",
]


def __getattr__(name: str) -> Any:
    module_name = _MODULE_OF.get(name)
    if module_name is None:
        raise AttributeError(f"module 'scratchlm.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"scratchlm.data.{module_name}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value
