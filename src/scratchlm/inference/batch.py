"""Continuous batching: many sequences decoded together, each with its own prompt length,
position, sampling settings, seed and stop state.

Rows join (`BatchDecoder.add`) and leave (`remove`, or when finished) between decode steps without
disturbing the others. With `prefill_chunk`, a long prompt is prefilled a chunk per `step()`,
interleaved with decoding, so a newcomer's prompt never stalls the running rows for more than one
chunk's forward. `GenerationRequest` and `GenerationOutput` are what a row takes and gives.

Log-probabilities (for OpenAI's `logprobs`): a row whose request sets `logprobs` (the top-N count,
0 for the chosen token's alone) records, per generated token, `log_softmax` of the model's raw
logits in float32 (before the bias, penalties, temperature and filters); `prompt_logprobs` also
keeps every prompt position's log-probabilities during its prefill (a full-position forward for
that row only; other rows keep the last-token-only prefill). `max_new_tokens=0` prefills and
finishes without sampling (scoring a prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from scratchlm.device import on_one_torch_thread
from scratchlm.errors import ScratchLMError
from scratchlm.inference.decode import Decoder, fit_prompt
from scratchlm.inference.kernels.decoder import FastDecoder, fast_decoder
from scratchlm.inference.sampling import history_counts, make_generator, sample_next_token
from scratchlm.inference.settings import LogitBias, SamplingSettings, check_logit_bias
from scratchlm.kv_cache import KVCache, cache_dtype
from scratchlm.model import GPT

# While rows decode, a step prefills at most this many prompt tokens per row in the batch
# (decoding or prefilling; at least PREFILL_TOKENS_WHILE_DECODING_MIN, at most `prefill_chunk`;
# see BatchDecoder).
PREFILL_TOKENS_PER_ROW = 8
PREFILL_TOKENS_WHILE_DECODING_MIN = 64


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int = 128
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    seed: int | None = None
    stop_ids: frozenset[int] = frozenset()
    truncate: bool = False  # drop the oldest prompt tokens instead of refusing a too-long prompt
    logit_bias: LogitBias = ()  # (token id, bias) pairs, as OpenAI's logit_bias
    logprobs: int | None = None  # record each generated token's logprob and this many top ones
    prompt_logprobs: bool = False  # also record the prompt tokens' (uses `logprobs` for top-N)

    def __post_init__(self) -> None:
        check_logit_bias(self.logit_bias)


@dataclass(frozen=True)
class TokenLogprob:
    """A token, its log-probability (log_softmax of the raw logits, float32) and the `top` most
    likely tokens at that position, (token, logprob) best first."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@on_one_torch_thread
def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, top: int) -> list[TokenLogprob]:
    """logits (T, vocab) and the tokens chosen after them (T,) -> one TokenLogprob each."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, tokens.view(-1, 1)).view(-1).tolist()
    if top > 0:
        values, ids = logprobs.topk(min(top, logprobs.shape[-1]), dim=-1)
        tops = [
            tuple(zip(row_ids, row_values, strict=True))
            for row_ids, row_values in zip(ids.tolist(), values.tolist(), strict=True)
        ]
    else:
        tops = [()] * len(chosen)
    return [
        TokenLogprob(int(token), float(value), top_entries)
        for token, value, top_entries in zip(tokens.tolist(), chosen, tops, strict=True)
    ]


@dataclass
class GenerationOutput:
    token_ids: list[int]
    # "stop" (a stop token or string), "length" (max_new_tokens / context full), or "error" (this
    # row's sampling or prefill failed; see BatchDecoder)
    finish_reason: str
    prompt_tokens: int
    truncated_tokens: int = 0


@dataclass
class Row:
    """One sequence of a BatchDecoder."""

    handle: int
    request: GenerationRequest
    prompt_len: int
    truncated_tokens: int
    generator: torch.Generator
    counts: torch.Tensor | None
    position: int = 0  # where the next input token goes
    last_token: int = 0
    generated: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "error" when this row alone failed (see `error`)
    error: str | None = None  # what went wrong, for finish_reason "error"
    # Prompt tokens not yet in the cache (chunked prefill); the row decodes once this is empty.
    pending: list[int] = field(default_factory=list)
    prompt: list[int] = field(default_factory=list)
    # With request.logprobs: one per generated token; with prompt_logprobs, one per prompt token
    # after the first (the first has none: nothing precedes it).
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def prefilling(self) -> bool:
        return bool(self.pending)

    def output(self) -> GenerationOutput:
        return GenerationOutput(
            list(self.generated),
            self.finish_reason or "length",
            self.prompt_len,
            self.truncated_tokens,
        )


class BatchDecoder:
    """Decode many sequences together; rows join and leave between steps.

    Active rows always occupy cache rows 0..A-1: a new row is prefilled into slot A (a view of the
    shared cache), and a leaving row's slot is filled by moving the last row into it (one row copy),
    so each decode step runs one forward over a contiguous (A, 1) batch with per-row positions.

    With `prefill_chunk`, `add` only registers the row; each `step` then prefills at most
    `prefill_chunk` prompt tokens (over all waiting rows, oldest first) after the decode forward,
    and while rows decode at most 8 per row in the batch (at least 64): a step's prompt work
    grows with the load, so with a few clients the steps stay short and a request that arrives
    meanwhile soon gets its turn, while a burst of many requests still drains in full chunks.
    `scratchlm serve` on llama-42m bf16, 8 streaming clients, time to first token p50 / p95:
    40 / 59 ms against 61-80 / 110-138 with a fixed chunk of 256; at 32 clients about the same
    as the fixed chunk (docs/benchmarks.md).
    Rows still prefilling sit after the decoding rows (slots D..A-1), so the decode forward stays
    one contiguous (D, 1) batch; a row whose prompt is complete swaps into slot D.

    A failure that belongs to one row (its sampling, or the forward of its own prefill chunk)
    ends that row alone with finish_reason "error" and the reason in `row.error`; the others go
    on. Only a failure of the shared decode forward propagates out of `step()`.
    """

    def __init__(
        self,
        model: GPT,
        *,
        max_batch: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        prefill_chunk: int | None = None,
    ) -> None:
        if prefill_chunk is not None and prefill_chunk < 1:
            raise ScratchLMError(f"prefill_chunk must be >= 1 (or None), got {prefill_chunk}")
        self.prefill_chunk = prefill_chunk
        self.model = model
        self.config = model.config
        self.device = (
            torch.device(device) if device is not None else model.token_embedding.weight.device
        )
        self.max_len = min(max_len or self.config.context_length, self.config.context_length)
        dtype = cache_dtype(model)
        self.cache = KVCache.for_model(
            self.config, max_batch, self.max_len, dtype=dtype, device=self.device
        )
        self.max_batch = max_batch
        self.rows: list[Row] = []
        self.finished: list[Row] = []
        self._next_handle = 0
        # A lone decoding row always sits in cache row 0, which never moves: its Decoder (and the
        # kernel decoder inside it) is built once.
        self._lone_row = Decoder(model, self.cache.rows(0, 1))
        # The prefill Decoder of each cache slot, built when the slot first takes a prompt and
        # kept (slots never move): building one with its kernel decoder took ~0.9 ms, which every
        # request paid before its first token.
        self._slot_decoders: dict[int, Decoder] = {}
        # The kernels' batch step over the whole cache (None: the model's forward), decided at
        # the first step with two or more decoding rows.
        self._batch_kernel: FastDecoder | None = None
        self._batch_kernel_checked = False

    @property
    def active(self) -> int:
        return len(self.rows)

    @property
    def has_room(self) -> bool:
        return len(self.rows) < self.max_batch

    @property
    def decoding(self) -> int:
        """How many rows have their whole prompt in the cache (they occupy slots 0..decoding-1)."""
        return sum(1 for row in self.rows if not row.prefilling)

    @property
    def prefill_backlog(self) -> int:
        """Prompt tokens still waiting to be prefilled."""
        return sum(len(row.pending) for row in self.rows)

    @torch.inference_mode()
    def add(self, request: GenerationRequest) -> int:
        """Prefill a new row and sample its first token (or, with `prefill_chunk`, register it to
        be prefilled by the next steps); returns the row's handle."""
        if not self.has_room:
            raise ScratchLMError(
                f"the batch is full ({self.max_batch} rows); wait for a row to finish"
            )
        if request.max_new_tokens < 0:
            raise ScratchLMError(f"max_new_tokens must be >= 0, got {request.max_new_tokens}")
        prompt, dropped = fit_prompt(request.prompt_ids, self.max_len, request.truncate)
        row = Row(
            handle=self._next_handle,
            request=request,
            prompt_len=len(prompt),
            truncated_tokens=dropped,
            generator=make_generator(request.seed, self.device),
            counts=None,
            prompt=prompt,
        )
        self._next_handle += 1
        if self.prefill_chunk is not None:
            row.pending = list(prompt)
            self.rows.append(row)
            return row.handle
        slot = len(self.rows)
        self.rows.append(row)
        try:
            self._prefill(row, slot, prompt)
        except Exception:
            self.rows.pop()  # the failed row must not stay behind in the batch
            raise
        return row.handle

    def _prefill(self, row: Row, slot: int, tokens: list[int]) -> bool:
        """Write `tokens` (the next part of the row's prompt) into its cache slot; once the prompt
        is complete, sample the first token. Returns True when the prompt is complete."""
        if row.request.prompt_logprobs:
            logits = self._prefill_scored(row, slot, tokens)
        else:
            decoder = self._slot_decoders.get(slot)
            if decoder is None:
                decoder = Decoder(self.model, self.cache.rows(slot, slot + 1))
                self._slot_decoders[slot] = decoder
            logits = decoder.prefill(tokens, position=row.position)
        row.position += len(tokens)
        del row.pending[: len(tokens)]
        if row.pending:
            return False
        self._accept(row, logits, first=True)
        return True

    def _prefill_scored(self, row: Row, slot: int, tokens: list[int]) -> torch.Tensor:
        """As `Decoder.prefill`, keeping every position's logits to record the log-probabilities
        of the prompt tokens that follow them; returns the last position's logits (1, vocab)."""
        cache = self.cache.rows(slot, slot + 1)
        inputs = torch.tensor([tokens], dtype=torch.long, device=self.device)
        positions = None
        if row.position == 0:
            cache.length = 0  # the model's own causal path, as Decoder.prefill
        else:
            positions = torch.arange(
                row.position, row.position + len(tokens), device=self.device
            ).unsqueeze(0)
        logits = self.model(inputs, positions=positions, kv_cache=cache)
        logits = logits[0, :, : self.config.vocab_size]  # (T, vocab)
        # Position p predicts prompt token p + 1; the last prompt position predicts new text.
        start = row.position
        scored = min(len(tokens), row.prompt_len - 1 - start)
        if scored > 0:
            targets = torch.tensor(
                row.prompt[start + 1 : start + 1 + scored], dtype=torch.long, device=self.device
            )
            row.prompt_logprobs.extend(
                token_logprobs(logits[:scored], targets, row.request.logprobs or 0)
            )
        return logits[-1:]

    def _accept(self, row: Row, logits: torch.Tensor, first: bool = False) -> None:
        """Sample the row's next token from logits (1, vocab) and update its stop state; a
        failure ends this row alone (finish_reason "error")."""
        if first and row.request.max_new_tokens == 0:
            row.finish_reason = "length"  # a prompt to score: nothing is generated
            return
        try:
            if first:
                row.counts = history_counts(
                    row.prompt, row.request.sampling, self.config.vocab_size, self.device
                )
            request = row.request
            token = int(
                sample_next_token(
                    logits, request.sampling, row.generator, row.counts, request.logit_bias
                ).item()
            )
        except Exception as error:  # any failure here is this row's alone
            self._fail(row, error)
            return
        if token in row.request.stop_ids:
            row.finish_reason = "stop"
            return
        if request.logprobs is not None:
            try:
                chosen = torch.tensor([token], dtype=torch.long, device=logits.device)
                entry = token_logprobs(logits, chosen, request.logprobs)
            except Exception as error:  # this row's alone, as its sampling
                self._fail(row, error)
                return
            row.logprobs.extend(entry)
        row.generated.append(token)
        row.last_token = token
        if row.counts is not None:
            row.counts[0, token] += 1
        if len(row.generated) >= row.request.max_new_tokens or row.position >= self.max_len:
            row.finish_reason = "length"

    @torch.inference_mode()
    def step(self) -> list[Row]:
        """One decode step for every unfinished row (then, with `prefill_chunk`, one prefill
        chunk); returns the rows that finished (and leaves them out of the batch). Rows finished
        at an unchunked prefill are returned by the next call."""
        done = [row for row in self.rows if not row.prefilling and row.finish_reason is not None]
        # Compact first so the running rows are cache rows 0..count-1.
        for row in done:
            self._drop(row)
        count = self.decoding
        newly_done: list[Row] = []
        if count:
            running = self.rows[:count]
            plan = self._mixed_plan(running)
            if plan is not None:
                # The decode tokens and this step's prompt chunks in one kernel call: each weight
                # block is read once for both, and one call's fixed cost is saved.
                logits, first_logits = self._mixed_step(running, plan)
            elif count == 1:
                # One decoding row (a single client): the decode primitive, as Engine.generate
                # (the fp32 CPU kernels when they apply).
                row = running[0]
                logits = self._lone_row.step(row.last_token, position=row.position)  # (1, vocab)
            else:
                logits = self._batch_step(running)  # (count, vocab)
            for index, row in enumerate(running):
                row.position += 1
                self._accept(row, logits[index : index + 1])
            newly_done = [row for row in running if row.finish_reason is not None]
            for row in newly_done:
                self._drop(row)
            if plan is not None:
                return done + newly_done + self._finish_chunks(plan, first_logits)
        return done + newly_done + self._prefill_step()

    def _kernel_batch(self) -> FastDecoder | None:
        """The kernels' batch forward over the whole cache (None: the model's forward), decided
        once, at its first use."""
        if not self._batch_kernel_checked:
            self._batch_kernel = fast_decoder(self.model, self.cache, batch=True)
            self._batch_kernel_checked = True
        return self._batch_kernel

    def _mixed_plan(self, running: list[Row]) -> list[tuple[Row, list[int]]] | None:
        """The prompt chunks this step prefills (as `_prefill_step` would choose them: up to
        `prefill_chunk` tokens, oldest row first) when they can ride along in the kernels' batch
        call with the decode tokens of `running`; None: decode and prefill run apart."""
        if not self.prefill_chunk or not any(row.prefilling for row in self.rows):
            return None
        kernel = self._kernel_batch()
        if kernel is None:
            return None
        plan: list[tuple[Row, list[int]]] = []
        budget = self._prefill_budget()
        for row in sorted((row for row in self.rows if row.prefilling), key=lambda r: r.handle):
            if budget <= 0:
                break
            if row.request.prompt_logprobs:
                return None  # it needs every position's logits: the PyTorch forward, apart
            tokens = row.pending[:budget]
            budget -= len(tokens)
            plan.append((row, tokens))
        rows_and_positions = [(row.last_token, row.position) for row in running] + [
            (token, row.position + offset)
            for row, tokens in plan
            for offset, token in enumerate(tokens)
        ]
        if not all(
            0 <= token < kernel.vocab and position < kernel.max_positions
            for token, position in rows_and_positions
        ):
            return None  # out-of-range input: the separate paths report it for that row alone
        return plan

    def _mixed_step(
        self, running: list[Row], plan: list[tuple[Row, list[int]]]
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """One kernel call: a token for each decoding row (cache rows 0..count-1) and the prompt
        chunks of `plan` at their rows' slots. Returns the decoding rows' logits (count, vocab)
        and, by row handle, the logits (1, vocab) after each prompt the call completes. The
        prefilling rows' positions move past their chunks now (the cache rows a later move
        copies must cover them); their pending tokens go in `_finish_chunks`."""
        kernel = self._batch_kernel
        assert kernel is not None
        count = len(running)
        tokens = [row.last_token for row in running]
        slots = list(range(count))
        positions = [row.position for row in running]
        wanted = list(range(count))
        completing: list[int] = []  # handles, in the order of their logits
        for row, chunk in plan:
            slot = self.rows.index(row)
            tokens += chunk
            slots += [slot] * len(chunk)
            positions += range(row.position, row.position + len(chunk))
            if len(chunk) == len(row.pending):
                wanted.append(len(tokens) - 1)
                completing.append(row.handle)
        logits = kernel.forward(tokens, slots, positions, logits_for=wanted)
        logits = logits[:, : self.config.vocab_size]
        # The cache's bookkeeping as the model's forward keeps it.
        self.cache.rows(0, count).advance(torch.tensor(positions[:count]).view(count, 1), 1, count)
        for row, chunk in plan:
            slot = self.rows.index(row)
            end = row.position + len(chunk)
            filled = end if row.position == 0 else max(int(self.cache.lengths[slot]), end)
            self.cache.lengths[slot] = filled
            row.position = end
        first = {
            handle: logits[count + index : count + index + 1]
            for index, handle in enumerate(completing)
        }
        return logits[:count], first

    def _finish_chunks(
        self, plan: list[tuple[Row, list[int]]], first_logits: dict[int, torch.Tensor]
    ) -> list[Row]:
        """After `_mixed_step`: the chunks leave their rows' pending prompts; a completed prompt
        samples its first token and its row moves into the decoding slots, as `_prefill_step`.
        Returns rows already finished by their first token."""
        finished: list[Row] = []
        for row, chunk in plan:
            del row.pending[: len(chunk)]
            if row.pending:
                continue
            self._accept(row, first_logits[row.handle], first=True)
            self._swap(self.rows.index(row), self.decoding - 1)
            if row.finish_reason is not None:
                self._drop(row)
                finished.append(row)
        return finished

    def _batch_step(self, running: list[Row]) -> torch.Tensor:
        """One token for each decoding row (cache rows 0..count-1, each at its own position);
        logits (count, vocab). Through the kernels' batch step when they apply (each weight block
        read once for all rows), else the model's forward over the (count, 1) batch."""
        count = len(running)
        tokens = [row.last_token for row in running]
        positions = [row.position for row in running]
        kernel = self._kernel_batch()
        view = self.cache.rows(0, count)
        if (
            kernel is not None
            and max(positions) < kernel.max_positions
            and all(0 <= token < kernel.vocab for token in tokens)
        ):
            logits = kernel.forward(tokens, range(count), positions)  # (count, padded_vocab)
            view.advance(torch.tensor(positions).view(count, 1), 1, count)  # as the forward does
            return logits[:, : self.config.vocab_size]
        inputs = torch.tensor([[token] for token in tokens], device=self.device)
        position_tensor = torch.tensor([[position] for position in positions], device=self.device)
        logits = self.model(inputs, positions=position_tensor, kv_cache=view)
        return logits[:, -1, : self.config.vocab_size]

    @staticmethod
    def _fail(row: Row, error: BaseException) -> None:
        row.finish_reason = "error"
        row.error = str(error) or type(error).__name__

    def _prefill_budget(self) -> int:
        """Prompt tokens this step may prefill."""
        assert self.prefill_chunk is not None
        if self.decoding == 0:
            return self.prefill_chunk
        per_rows = PREFILL_TOKENS_PER_ROW * len(self.rows)
        return min(self.prefill_chunk, max(PREFILL_TOKENS_WHILE_DECODING_MIN, per_rows))

    def _prefill_step(self) -> list[Row]:
        """Spend up to this step's prompt budget (`_prefill_budget`) on the prefilling rows,
        oldest first; rows whose prompt completes move into the decoding slots. Returns rows
        already finished by their first token."""
        budget = self._prefill_budget() if self.prefill_chunk else 0
        finished: list[Row] = []
        while budget > 0:
            waiting = [row for row in self.rows if row.prefilling]
            if not waiting:
                break
            row = min(waiting, key=lambda candidate: candidate.handle)
            tokens = row.pending[:budget]
            budget -= len(tokens)
            slot = self.rows.index(row)
            try:
                complete = self._prefill(row, slot, tokens)
            except Exception as error:  # this row's own forward: it fails alone
                if row.prefilling:
                    self._fail(row, error)
                    self._drop(row)
                    finished.append(row)
                    continue
                raise
            if not complete:
                continue
            self._swap(slot, self.decoding - 1)  # the first slot after the other decoding rows
            if row.finish_reason is not None:
                self._drop(row)
                finished.append(row)
        return finished

    def remove(self, handle: int) -> Row | None:
        """Take a row out now (e.g. its client disconnected); its slot is free for the next add."""
        for row in self.rows:
            if row.handle == handle:
                row.finish_reason = row.finish_reason or "cancelled"
                self._drop(row)
                return row
        return None

    def _move(self, source: int, target: int) -> None:
        # A row's cache holds positions 0..position-1 (position: where its next token goes).
        self.cache.copy_row(source, target, filled=self.rows[source].position)
        self.rows[target] = self.rows[source]

    def _swap(self, first: int, second: int) -> None:
        if first == second:
            return
        filled = max(self.rows[first].position, self.rows[second].position)
        self.cache.swap_rows(first, second, filled=filled)
        self.rows[first], self.rows[second] = self.rows[second], self.rows[first]

    def _drop(self, row: Row) -> None:
        """Free a row's slot, keeping decoding rows before prefilling ones (one or two row
        copies)."""
        slot = self.rows.index(row)
        last = len(self.rows) - 1
        if row.prefilling:
            if slot != last:
                self._move(last, slot)
        else:
            last_decoding = self.decoding - 1
            if slot != last_decoding:
                self._move(last_decoding, slot)
            if last != last_decoding:
                self._move(last, last_decoding)
        self.rows.pop()
