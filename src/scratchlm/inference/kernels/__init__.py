"""fp32 CPU decode kernels: one C++ call per decoded token, with automatic fallback.

Decoding one token at batch 1 reads every weight once. PyTorch's CPU GEMV streams weights from
DRAM at ~10 GB/s on the reference machine (2-core EPYC, AVX-512) while a plain read reaches 30+
GB/s, and a small model spends most of its step in per-op overhead (~200 PyTorch ops per token).
`decode.cpp` computes a whole decode step (embedding, every block, final norm, lm_head) in one call
with row-blocked FMA GEMVs (~24 GB/s with two threads), reading the model's own parameters and KV
cache in place (no copies, no extra memory). See docs/benchmarks.md, "Inference speed (issue 3)".

- `loader`: compiles decode.cpp (on first use, cached), loads it and declares its ctypes binding.
- `decoder`: `fast_decoder(model, cache)` after the prefill; it is None whenever the fast path does
  not apply (then keep calling the model), else `decoder.step(token)` returns the logits
  (1, 1, padded_vocab) for that token and advances the cache, exactly like
  `model(tensor([[token]]), kv_cache=cache, last_token_only=True)` up to fp32 rounding.

Callers do not choose between the two paths themselves: `scratchlm.inference.decode.Decoder` does.
It applies to plain `GPT` models with fp32 weights on CPU, unquantized `nn.Linear` layers (no LoRA
wrappers, no hooks, no replaced `forward`), in eval mode (or with dropout 0), batch-1 caches.
"""
