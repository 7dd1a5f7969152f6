"""The lm-evaluation-harness bridge: our checkpoints as an lm-eval model, registered as `scratchlm`.

Importing this module imports lm-eval (`import scratchlm` never does). The class implements lm-eval's
three request types on our own code, so that lm-eval's tasks score our models exactly as
`scratchlm eval --tasks` does:

- `loglikelihood`: `scoring.encode_pair` (lm-eval's `_encode_pair`) and the batched
  `scoring.score_loglikelihoods` (shared-context KV reuse, left truncation), the very functions of
  the built-in scorer, so a task formatted the same way gets the same numbers.
- `loglikelihood_rolling`: lm-eval's rolling windows (`get_rolling_token_windows` with context 1,
  made disjoint) over our context length, the first window after the end-of-document token;
  every token of the document is predicted once, each window with as much context as fits.
- `generate_until`: our `Engine` (greedy unless `do_sample` with a temperature above 0), cut at
  the request's `until` strings and at the end-of-document token, `max_gen_toks` new tokens at
  most; like lm-eval's HF model, the prompt is left-truncated to leave room for them.

Two routes from lm-eval itself (lm-eval 0.4.13 has no plugin entry point for models; its registry
knows only what was imported):

    python -m scratchlm.evaluation.harness run --model scratchlm --model_args pretrained=CKPT \
        --tasks arc_easy [--include_path DIR --metadata '{"task_data": "DATA"}']

(this module registers the class, then runs lm-eval's own CLI), or in Python
`import scratchlm.evaluation.harness` before `lm_eval.simple_evaluate(model="scratchlm", ...)`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from scratchlm.errors import ScratchLMError
from scratchlm.evaluation.scoring import (
    LoglikelihoodRequest,
    ScoringStats,
    encode_pair,
    score_loglikelihoods,
)
from scratchlm.model import GPT
from scratchlm.tokenizer import Tokenizer

try:
    # lm-eval fills its model registry lazily, only while the registry is empty: its own models
    # must be in before ours, or `get_model("hf")` and `local-completions` would go missing.
    import lm_eval.models  # noqa: F401
    from lm_eval.api.instance import Instance
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError:
    raise ScratchLMError(
        "the lm-evaluation-harness bridge needs the lm-eval package; install it with "
        "`pip install 'scratchlm[eval]'`"
    ) from None

logger = logging.getLogger(__name__)

MODEL_NAME = "scratchlm"
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default for `max_gen_toks`
DEFAULT_SEED = 1234  # lm-eval's default seeds
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# gen_kwargs keys that generate_until reads; any other earns a warning (never silently ignored).
GEN_KWARGS = frozenset({"until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p"})


def _flag(value: bool | str | int, name: str) -> bool:
    """A boolean model_arg: lm-eval passes "True"/"False" strings through as bools, or not."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no", ""):
        return False
    raise ScratchLMError(f"model_args {name}={value!r}: use true or false")


def _batch_size(value: int | str | None) -> int:
    if value is None:
        return DEFAULT_BATCH_SIZE
    if isinstance(value, str) and value.startswith("auto"):
        logger.warning(
            "batch_size=%s: scratchlm does not probe for the largest batch; using %d",
            value,
            DEFAULT_BATCH_SIZE,
        )
        return DEFAULT_BATCH_SIZE
    try:
        size = int(value)
    except ValueError:
        raise ScratchLMError(f"batch_size={value!r} is not a whole number; pass e.g. 8") from None
    if size < 1:
        raise ScratchLMError(f"batch_size must be >= 1, got {size}")
    return size


@register_model(MODEL_NAME)
class ScratchLMHarness(LM):
    """A scratchlm model for lm-eval: from `pretrained=CHECKPOINT` (a checkpoint or run directory,
    with the model_args `device`, `batch_size`, `dtype`, `skip_checksums`, `seed`), or from an
    already loaded `model` and `tokenizer`."""

    def __init__(
        self,
        pretrained: str | None = None,
        *,
        model: GPT | None = None,
        tokenizer: Tokenizer | None = None,
        device: str | None = None,
        batch_size: int | str | None = None,
        dtype: str | None = None,
        skip_checksums: bool | str = False,
        seed: int | str = DEFAULT_SEED,
        max_batch_size: int | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            logger.warning(
                "scratchlm ignores the model_args %s; it takes pretrained, device, batch_size, "
                "dtype, skip_checksums and seed",
                ", ".join(sorted(unknown)),
            )
        del max_batch_size  # lm-eval passes it to every model; there is no automatic batch size
        self.batch_size = _batch_size(batch_size)
        self.seed = int(seed)
        self.stats = ScoringStats()
        if model is not None:
            if pretrained is not None or tokenizer is None:
                raise ScratchLMError(
                    "pass either pretrained=CHECKPOINT, or model= and tokenizer= (not both)"
                )
            if dtype is not None or device is not None:
                logger.warning("device and dtype apply only to pretrained=; the model stays as is")
            self.model, self.tokenizer = model, tokenizer
            self.checkpoint = ""
        else:
            if pretrained is None:
                raise ScratchLMError(
                    "the scratchlm model needs pretrained=CHECKPOINT (a checkpoint or run "
                    "directory), e.g. --model_args pretrained=runs/tiny"
                )
            self.model, self.tokenizer = self._load(
                str(pretrained), device or "auto", dtype, _flag(skip_checksums, "skip_checksums")
            )
            self.checkpoint = str(pretrained)
        self.model.eval()
        self._device = self.model.token_embedding.weight.device

    @staticmethod
    def _load(
        checkpoint: str, device_name: str, dtype: str | None, skip_checksums: bool
    ) -> tuple[GPT, Tokenizer]:
        from scratchlm.checkpoint import load_checkpoint
        from scratchlm.device import inference_dtype, select_device

        device = select_device(device_name)
        if dtype is None or dtype == "auto":
            chosen = inference_dtype(device)
        elif dtype in DTYPES:
            chosen = DTYPES[dtype]
        else:
            raise ScratchLMError(f"dtype={dtype!r}: use auto, {', '.join(DTYPES)}")
        loaded = load_checkpoint(checkpoint, device, dtype=chosen, verify=not skip_checksums)
        return loaded.model, loaded.tokenizer

    # --- what lm-eval asks of a model ----------------------------------------------------------

    @property
    def max_length(self) -> int:
        return self.model.config.context_length

    @property
    def tokenizer_name(self) -> str:
        return f"scratchlm-{self.tokenizer.fingerprint()}"

    def get_model_info(self) -> dict[str, Any]:
        return {
            "model_checkpoint": self.checkpoint,
            "model_context_length": self.max_length,
            "model_parameters": sum(p.numel() for p in self.model.parameters()),
        }

    def loglikelihood(
        self, requests: Sequence[Instance], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        """(summed log-probability of the continuation, whether it is all greedy) per
        (context, continuation) request."""
        pairs = [(str(request.args[0]), str(request.args[1])) for request in requests]
        encoded = [encode_pair(self.tokenizer, context, text) for context, text in pairs]
        scores = score_loglikelihoods(
            self.model, encoded, batch_size=self.batch_size, stats=self.stats
        )
        results = [(score.logprob, score.is_greedy) for score in scores]
        for pair, result in zip(pairs, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", pair, result)
        return results

    def rolling_windows(self, text: str) -> list[LoglikelihoodRequest]:
        """lm-eval's disjoint rolling windows over the text's tokens: together they predict
        every token once, the first from the end-of-document token."""
        tokens = self.tokenizer.encode(text)
        windows = get_rolling_token_windows(
            token_list=tokens,
            prefix_token=self.tokenizer.eos_id,
            max_seq_len=self.max_length,
            context_len=1,
        )
        return [
            LoglikelihoodRequest(tuple(context), tuple(continuation))
            for context, continuation in map(make_disjoint_window, windows)
        ]

    def loglikelihood_rolling(
        self, requests: Sequence[Instance], disable_tqdm: bool = False
    ) -> list[float]:
        """The log-likelihood of each whole document (for perplexity tasks)."""
        texts = [str(request.args[0]) for request in requests]
        windows: list[LoglikelihoodRequest] = []
        owners: list[int] = []
        for index, text in enumerate(texts):
            for window in self.rolling_windows(text):
                windows.append(window)
                owners.append(index)
        totals = [0.0] * len(texts)
        # All documents' windows in one call: similar lengths share a batch.
        scores = score_loglikelihoods(
            self.model, windows, batch_size=self.batch_size, stats=self.stats
        )
        for owner, score in zip(owners, scores, strict=True):
            totals[owner] += score.logprob
        for text, total in zip(texts, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return totals

    def generate_until(self, requests: Sequence[Instance], disable_tqdm: bool = False) -> list[str]:
        """The continuation of each (context, gen_kwargs) request, without its stop string."""
        from scratchlm.inference.engine import Engine
        from scratchlm.inference.streaming import TextStream

        engine = Engine(self.model)
        warned: set[str] = set()
        outputs = []
        for request in requests:
            context, gen_kwargs = str(request.args[0]), dict(request.args[1] or {})
            for key in sorted(set(gen_kwargs) - GEN_KWARGS - warned):
                logger.warning("scratchlm ignores the generation setting %s", key)
                warned.add(key)
            until, max_gen_toks, sampling = generation_settings(gen_kwargs)
            prompt_ids = self.tokenizer.encode(context) if context else [self.tokenizer.eos_id]
            # As lm-eval's HF model: keep the newest context tokens that leave room for
            # max_gen_toks (the engine still keeps at least one new token's room).
            room = self.max_length - max_gen_toks
            if room >= 1 and len(prompt_ids) > room:
                prompt_ids = prompt_ids[-room:]
                self.stats.truncated += 1
            tokens = engine.generate(
                prompt_ids,
                max_new_tokens=max_gen_toks,
                sampling=sampling,
                seed=self.seed,
                stop_ids=frozenset({self.tokenizer.eos_id}),
                truncate=True,
            )
            text = "".join(TextStream(self.tokenizer, until).feed(tokens))
            self.cache_hook.add_partial("generate_until", (context, request.args[1]), text)
            outputs.append(text)
        return outputs


def generation_settings(gen_kwargs: dict[str, Any]) -> tuple[tuple[str, ...], int, Any]:
    """(stop strings, max new tokens, SamplingSettings) from lm-eval's gen_kwargs, with lm-eval's
    HF defaults: greedy unless do_sample with a temperature above 0 (1.0 when unset)."""
    from scratchlm.inference.settings import GREEDY, SamplingSettings

    until = gen_kwargs.get("until") or ()
    stops = (until,) if isinstance(until, str) else tuple(str(stop) for stop in until)
    max_gen_toks = int(gen_kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
    if max_gen_toks < 1:
        raise ScratchLMError(f"max_gen_toks must be >= 1, got {max_gen_toks}")
    do_sample = _flag(gen_kwargs.get("do_sample", False), "do_sample")
    temperature = float(gen_kwargs.get("temperature", 1.0 if do_sample else 0.0))
    if not do_sample or temperature == 0.0:
        return stops, max_gen_toks, GREEDY
    top_k, top_p = gen_kwargs.get("top_k"), gen_kwargs.get("top_p")
    sampling = SamplingSettings(
        temperature=temperature,
        top_k=int(top_k) if top_k is not None else None,
        top_p=float(top_p) if top_p is not None else None,
    )
    return stops, max_gen_toks, sampling


def main() -> None:
    """lm-eval's own command line, with the `scratchlm` model registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
