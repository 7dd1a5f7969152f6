"""CPU decode kernels: one C++ call per decoded token (or per batch step of many rows, or per 256
prompt tokens), on fp32, bf16, q8 or q4 weights, with automatic fallback.

Decoding one token at batch 1 reads every weight once. PyTorch's CPU GEMV streams weights from
DRAM at ~10 GB/s on the reference machine (2-core EPYC) while a plain read reaches 30+ GB/s, and a
small model spends most of its step in per-op overhead (~200 PyTorch ops per token). `decode.cpp`
computes a whole decode step (embedding, every block, final norm, lm_head) in one call with
row-blocked GEMVs, reading the model's own parameters and KV cache in place (no copies). Fewer bytes
per weight go faster still: bf16 (2 bytes), q8 (1.0625) and q4 (0.5625) blocks as GGUF's Q8_0 and
Q4_0, with integer dot products against int8-quantized inputs. See docs/benchmarks.md, "Inference
speed".

- `loader`: compiles decode.cpp (on first use, cached per CPU instruction set), loads it, checks its
  ISA against the CPU and declares its ctypes binding; one warning line when it cannot.
- `quant`: the block quantizers (q8, q4, bf16), and the packed copy of a model's linear layers
  (`attach`, `packed_weights`) that scratchlm.inference.quantize gives a model.
- `decoder`: `fast_decoder(model, cache)`; it is None whenever the fast path does not apply (then
  keep calling the model), else `decoder.step(token)` returns the logits (1, 1, padded_vocab) for
  that token and advances the cache, like
  `model(tensor([[token]]), kv_cache=cache, last_token_only=True)` up to fp32 rounding (fp32),
  or up to the rounding of each GEMV's input to bf16 precision (bf16) or int8 blocks (q8, q4). `decoder.forward(
  tokens, rows, positions)` runs many tokens in one call (`sl_forward_tokens`: each weight block
  read once for all of them): a prefill (consecutive positions of one row, 64 tokens per call) or
  a batch step (one token for each of many cache rows, `fast_decoder(model, cache, batch=True)`).

Callers do not choose between the two paths themselves: `scratchlm.inference.decode.Decoder` does.
It applies to plain `GPT` models with fp32 weights on CPU (a quantized model holds its dequantized
values as fp32 weights, and the kernel reads the packed copy), unmodified `nn.Linear` layers (no
LoRA wrappers, no hooks, no replaced `forward`), in eval mode (or with dropout 0), fp32 CPU caches
(batch 1 for `step`). The Decoder's prefill and score, the BatchDecoder's batch step, beam search
and speculative decoding go through `forward`.
"""
