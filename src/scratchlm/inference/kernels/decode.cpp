// fp32 CPU decode kernels for scratchlm: one whole decode step (batch 1, one token) in C++.
//
// Why: decoding one token reads every weight once, so its speed is bytes of weights over memory
// bandwidth. PyTorch's CPU GEMV (MKL sgemv) streams weights from DRAM at ~10 GB/s on the reference
// machine while a plain read reaches 30+ GB/s; the row-blocked FMA loop below reaches ~24 GB/s
// with two threads. Small models are instead bound by per-op overhead (~200 PyTorch ops per token),
// which a single call per token removes.
//
// Interface: a plain C ABI, loaded with ctypes (no torch headers: the build takes 2.5-4 s, where a
// torch C++ extension took 32 s).
// The Python side (scratchlm/inference/kernels/__init__.py) fills `SlModel` with pointers into the
// model's own parameters and KV cache (no copies), then calls `sl_decode_step` once per token, or
// `sl_forward_tokens` once for many tokens (a prefill, a batch step of many cache rows: see
// "many tokens per call" below).
// Threads: the calling thread plus `threads - 1` helper threads (a persistent team, see `Team`)
// share each GEMV phase in ~128 KB chunks claimed one at a time. The caller can finish a phase on
// its own, so a helper the OS has descheduled (a busy machine) never stalls a token the way a
// barrier would: with OpenMP barriers a 2-thread step fell from 57 to ~4 tokens/s on a loaded
// 2-core VM (worse than 1 thread's 34), because every one of the ~60 barriers per token waited
// for the descheduled thread.
//
// Math (matches scratchlm/model.py in eval mode; fp32 throughout):
//   x = tok_emb[token] (-> embedding RMSNorm) (+ pos_emb[pos])
//   per layer: h = norm(x); q,k,v = Wq h, Wk h, Wv h (+ biases); per-head RMSNorm on q, k (QK-norm);
//              rotate-half RoPE at `pos`; k, v written to the cache at `pos`; causal attention of
//              each query head over cache positions 0..pos of its KV head (GQA: head h uses KV head
//              h / (n_head / n_kv_head)); x += Wo attn (+ bias);
//              h = norm(x); x += Wdown act(Wup h) (SwiGLU: silu(Wgate h) * Wup h)
//   logits = Wlm norm(x) (-> cap * tanh(logits / cap))
// Summation order differs from MKL's, so results agree with PyTorch to fp32 rounding (~1e-6
// relative), not bit for bit.
//
// Weight formats (`SlModel::weight_type`, one per model; scratchlm/inference/kernels/quant.py
// writes them): fp32 (the parameters in place), bf16 (half the bytes; each GEMV/GEMM input is
// rounded to bf16 precision first, as llama.cpp's bf16 matmuls do, so the products are exact in
// fp32 and the many-token tiles can use AVX512-BF16's vdpbf16ps), q8 and q4 (32-value blocks
// with one fp16 scale each, GGUF's Q8_0 and Q4_0: 1.0625 and 0.5625 bytes per weight). For q8/q4
// each GEMV input is quantized once per phase to int8 in 32-value blocks with an fp32 scale (amax / 127), and the dots are integer: maddubs +
// madd on AVX2 (VNNI's dpbusd where the compiler targets it), one fp32 FMA per block and row, as
// llama.cpp's ggml_vec_dot_q8_0_q8_0 / q4_0_q8_0. Norms, embeddings, biases, attention and the KV
// cache stay fp32 in every format.

#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

enum NormKind : int32_t { kRmsNorm = 0, kLayerNorm = 1 };
enum MlpKind : int32_t { kGelu = 0, kGeluTanh = 1, kLeakyRelu = 2, kSwiGlu = 3, kRelu2 = 4 };
enum WeightType : int32_t { kF32 = 0, kQ8 = 1, kQ4 = 2, kBf16 = 3 };
enum KvType : int32_t { kKvFp32 = 0, kKvFp16 = 1 };

}  // namespace

extern "C" {

// One transformer block's tensors. Weights are row-major (out_features, in_features), contiguous,
// in the model's weight type: fp32 or bf16 rows of in_features values; q8 and q4 in groups of 4
// rows (out_features padded with zero rows to a multiple of 4), each group stored block by block:
// (groups, blocks, 4 rows, block bytes), so a group reads as one sequential stream. A q8 block is
// 32 int8 codes (in_features padded with zeros to whole blocks), a q4 block 16 bytes (value j of
// a block in the low nibble of byte j, value j + 16 in its high nibble, stored as code + 8); the
// block scales are (out_features padded to 4, blocks) fp16. Optional tensors
// (biases, LayerNorm bias, QK-norm weights, gate) are null when absent.
struct SlLayer {
  const float* attn_norm_w;
  const float* attn_norm_b;
  const void* q_w;
  const float* q_b;
  const void* k_w;
  const float* k_b;
  const void* v_w;
  const float* v_b;
  const void* o_w;
  const float* o_b;
  const float* q_norm_w;
  const float* k_norm_w;
  const float* mlp_norm_w;
  const float* mlp_norm_b;
  const void* gate_w;
  const float* gate_b;
  const void* up_w;
  const float* up_b;
  const void* down_w;
  const float* down_b;
  // This layer's cache for the decoded row: element [head, position, dim] lives at
  // keys[head * cache_head_stride + position * head_dim + dim], fp32 or fp16 (SlModel::kv_type).
  void* keys;
  void* values;
  // fp16 block scales of the q8/q4 weights above; null for fp32 and bf16.
  const uint16_t* q_s;
  const uint16_t* k_s;
  const uint16_t* v_s;
  const uint16_t* o_s;
  const uint16_t* gate_s;
  const uint16_t* up_s;
  const uint16_t* down_s;
};

struct SlModel {
  int64_t n_layer;
  int64_t d_model;
  int64_t n_head;
  int64_t n_kv_head;
  int64_t head_dim;
  int64_t ffn_hidden;
  int64_t vocab;  // rows of lm_head (the padded vocabulary)
  int64_t cache_head_stride;
  int32_t norm_kind;
  int32_t mlp_kind;
  float norm_eps;
  float leaky_relu_slope;
  float logit_softcap;  // <= 0: off
  float pad_;
  const float* token_embedding;     // (vocab, d_model)
  const float* position_embedding;  // (context, d_model) or null (RoPE)
  const float* embedding_norm_w;    // (d_model) or null
  const float* rope_cos;            // (context, head_dim) or null (learned positions)
  const float* rope_sin;
  const float* final_norm_w;
  const float* final_norm_b;
  const void* lm_head_w;  // (vocab, d_model) in the weight type
  const SlLayer* layers;  // n_layer entries
  // Workspace, at least sl_workspace_floats(...) floats; see the layout in sl_decode_step.
  float* workspace;
  const uint16_t* lm_head_s;  // its q8/q4 block scales, else null
  int32_t weight_type;        // WeightType
  int32_t pad2_;
  // Floats between two batch rows of a layer's cache (the cache tensor's stride(1)): row r's
  // element [head, position, dim] lives at keys + r * cache_row_stride + (as above). Only
  // sl_forward_tokens reads it; sl_decode_step writes row 0.
  int64_t cache_row_stride;
  // The cache's element type: 0 fp32, 1 fp16 (half the bytes that attention reads per position;
  // llama.cpp's default). Keys and values are rounded to fp16 once, when written.
  int32_t kv_type;
  int32_t pad3_;
};

}  // extern "C"

namespace {

#if defined(__AVX2__)
// The sum of a vector's 8 lanes.
inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

#endif

#if defined(__AVX512F__)
// The 16 x 16 transpose of 32-bit words in registers (the 4-stage AVX-512 transpose): r[c] holds
// row c's words 0..15 on entry (and is clobbered); column i (word i of rows 0..15) is stored at
// out + 16 i.
inline void transpose16_words(__m512i r[16], uint32_t* out) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int j = 0; j < 16; j += 4) {  // r[j + m]: column 4L + m of rows j..j+3 in lane L
    r[j] = _mm512_unpacklo_epi64(t[j], t[j + 2]);
    r[j + 1] = _mm512_unpackhi_epi64(t[j], t[j + 2]);
    r[j + 2] = _mm512_unpacklo_epi64(t[j + 1], t[j + 3]);
    r[j + 3] = _mm512_unpackhi_epi64(t[j + 1], t[j + 3]);
  }
  for (int m = 0; m < 4; ++m) {
    const __m512i x0 = _mm512_shuffle_i32x4(r[m], r[4 + m], 0x44);
    const __m512i x1 = _mm512_shuffle_i32x4(r[m], r[4 + m], 0xEE);
    const __m512i y0 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0x44);
    const __m512i y1 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0xEE);
    uint32_t* column = out + m * 16;
    _mm512_storeu_si512(column, _mm512_shuffle_i32x4(x0, y0, 0x88));            // L0
    _mm512_storeu_si512(column + 4 * 16, _mm512_shuffle_i32x4(x0, y0, 0xDD));   // L1
    _mm512_storeu_si512(column + 8 * 16, _mm512_shuffle_i32x4(x1, y1, 0x88));   // L2
    _mm512_storeu_si512(column + 12 * 16, _mm512_shuffle_i32x4(x1, y1, 0xDD));  // L3
  }
}
#endif

// --- dot products: 4 rows at a time, so each loaded x vector feeds 4 independent FMA chains ------

#if defined(__AVX512F__)
constexpr int kLanes = 16;

// out[i] = dot(w_i, x) for the R consecutive rows w_i = w + i K (R independent FMA chains that
// share each loaded x vector); see kRowBlock for R.
template <int R>
inline void dot_rows(const float* w, int64_t K, const float* x, float* out) {
  __m512 acc[R];
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    const __m512 xv = _mm512_loadu_ps(x + k);
    for (int i = 0; i < R; ++i) acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i * K + k), xv, acc[i]);
  }
  if (k < K) {
    const __mmask16 m = static_cast<__mmask16>((1u << (K - k)) - 1u);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
    for (int i = 0; i < R; ++i) {
      acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + i * K + k), xv, acc[i]);
    }
  }
  for (int i = 0; i < R; ++i) out[i] = _mm512_reduce_add_ps(acc[i]);
}

inline float dot(const float* w, const float* x, int64_t K) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;
  int64_t k = 0;
  for (; k + 2 * kLanes <= K; k += 2 * kLanes) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + kLanes), _mm512_loadu_ps(x + k + kLanes), a1);
  }
  for (; k < K; k += kLanes) {
    const int64_t left = K - k;
    const __mmask16 m =
        left >= kLanes ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
    a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + k), _mm512_maskz_loadu_ps(m, x + k), a0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

// out[i] += p * v[i] for i < n
inline void axpy(float p, const float* v, float* out, int64_t n) {
  const __m512 pv = _mm512_set1_ps(p);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm512_storeu_ps(out + i, _mm512_fmadd_ps(pv, _mm512_loadu_ps(v + i), _mm512_loadu_ps(out + i)));
  }
  for (; i < n; ++i) out[i] += p * v[i];
}

#elif defined(__AVX2__)
constexpr int kLanes = 8;

template <int R>
inline void dot_rows(const float* w, int64_t K, const float* x, float* out) {
  __m256 acc[R];
  for (int i = 0; i < R; ++i) acc[i] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    const __m256 xv = _mm256_loadu_ps(x + k);
    for (int i = 0; i < R; ++i) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(w + i * K + k), xv, acc[i]);
  }
  for (int i = 0; i < R; ++i) {
    float sum = hsum256(acc[i]);
    for (int64_t j = k; j < K; ++j) sum += w[i * K + j] * x[j];
    out[i] = sum;
  }
}

inline float dot(const float* w, const float* x, int64_t K) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  int64_t k = 0;
  for (; k + 2 * kLanes <= K; k += 2 * kLanes) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + kLanes), _mm256_loadu_ps(x + k + kLanes), a1);
  }
  float s = hsum256(_mm256_add_ps(a0, a1));
  for (; k < K; ++k) s += w[k] * x[k];
  return s;
}

inline void axpy(float p, const float* v, float* out, int64_t n) {
  const __m256 pv = _mm256_set1_ps(p);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + i), _mm256_loadu_ps(out + i)));
  }
  for (; i < n; ++i) out[i] += p * v[i];
}

#else
// No AVX2: the Python side does not use this library (sl_simd_width() == 0); portable code anyway.
inline float dot(const float* w, const float* x, int64_t K) {
  float s = 0.0f;
  for (int64_t k = 0; k < K; ++k) s += w[k] * x[k];
  return s;
}
template <int R>
inline void dot_rows(const float* w, int64_t K, const float* x, float* out) {
  for (int i = 0; i < R; ++i) out[i] = dot(w + i * K, x, K);
}
inline void axpy(float p, const float* v, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += p * v[i];
}
#endif

// Rows per block of the GEMV. More rows in flight keep more DRAM reads outstanding per core.
// Measured on the reference machine (llama-120m decode, 1 thread, tokens/s): AVX-512 4 rows 35,
// 8 40, 12 45, 16 47, 20 and 24 34 (16 accumulators + x fit the 32 vector registers, 20 spill);
// AVX2 (16 registers) 4 rows 30, 8 35, 12 39.
#if defined(SL_ROW_BLOCK)  // for measurements
constexpr int kRowBlock = SL_ROW_BLOCK;
#elif defined(__AVX512F__)
constexpr int kRowBlock = 16;
#else
constexpr int kRowBlock = 12;
#endif

// --- weight formats ----------------------------------------------------------------------
//
// Each format supplies: kBlock (rows per register block), row_bytes(K) (weight bytes per row, for
// chunk sizing), kIntInput (the input is quantized to int8 blocks first), and
// rows<R>(W, r, K, input, out): out[i] = dot(row r + i of W, input) for i < R (R = kBlock, 4 or 1).

constexpr int64_t kQBlock = 32;  // values per q8/q4 block (GGUF's QK8_0 / QK4_0)

inline int64_t q_blocks(int64_t K) { return (K + kQBlock - 1) / kQBlock; }

// A matrix in some format: its data (fp32, bf16, q8 or q4 rows) and, for q8/q4, the fp16 block
// scales (rows, q_blocks(K)).
struct Mat {
  const void* w;
  const uint16_t* s;
};

// A GEMV input: x (K) fp32, and for q8/q4 weights its int8 blocks: q (q_blocks(K) * 32 codes,
// zero past K) with one fp32 scale per block in d (x[k] ~ q[k] * d[k / 32]) and each block's sum
// of codes in sums (exact in fp32; q4's dots use it, see QFormat).
struct Input {
  const float* x;
  int8_t* q;
  float* d;
  float* sums;
  // sl_forward_tokens with fp32 weights: every input of the phase packed k-major in blocks of
  // kPackTokens tokens (see prepare_inputs); set on the first input only, null elsewhere.
  const float* packed = nullptr;
  // sl_forward_tokens with bf16 weights on AVX512-BF16: x rounded to bf16 (K values), for
  // vdpbf16ps tiles (see bf16_dot_tile); null elsewhere.
  const uint16_t* xb = nullptr;
};

inline float fp16_to_fp32(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  const uint32_t mantissa = h & 0x3FFu;
  float value;
  if (exponent == 0) {
    value = std::ldexp(static_cast<float>(mantissa), -24);  // zero or subnormal
  } else if (exponent == 31) {
    value = mantissa ? NAN : INFINITY;
  } else {
    value = std::ldexp(static_cast<float>(mantissa | 0x400u), static_cast<int>(exponent) - 25);
  }
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  bits |= sign;
  std::memcpy(&value, &bits, 4);
  return value;
#endif
}

inline uint16_t fp32_to_fp16(float f) {
#if defined(__F16C__)
  return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  // Round to nearest even, as F16C does (the portable build is never loaded; kept correct).
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude >= 0x7F800000u) return static_cast<uint16_t>(sign | (magnitude > 0x7F800000u ? 0x7E00u : 0x7C00u));
  if (magnitude >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // overflow
  if (magnitude < 0x38800000u) {  // subnormal or zero in fp16
    const float scaled = std::fabs(f) * 16777216.0f;  // units of 2^-24
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  const uint32_t rounded = magnitude + 0xFFFu + ((magnitude >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
#endif
}

// --- the KV cache's two element types: fp32 (memcpy, dot, axpy) or fp16 (converted on the fly) ---

inline void store_kv(float* out, const float* in, int64_t n) {
  std::memcpy(out, in, sizeof(float) * n);
}
inline void store_kv(uint16_t* out, const float* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = fp32_to_fp16(in[i]);
}
inline float dot_kv(const float* k, const float* q, int64_t n) { return dot(k, q, n); }
inline void axpy_kv(float p, const float* v, float* out, int64_t n) { axpy(p, v, out, n); }

#if defined(__AVX512F__)
inline float dot_kv(const uint16_t* k, const float* q, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    const __m512 k0 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k + i)));
    const __m512 k1 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k + i + kLanes)));
    a0 = _mm512_fmadd_ps(k0, _mm512_loadu_ps(q + i), a0);
    a1 = _mm512_fmadd_ps(k1, _mm512_loadu_ps(q + i + kLanes), a1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  for (; i < n; ++i) s += fp16_to_fp32(k[i]) * q[i];
  return s;
}
inline void axpy_kv(float p, const uint16_t* v, float* out, int64_t n) {
  const __m512 pv = _mm512_set1_ps(p);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m512 vv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i)));
    _mm512_storeu_ps(out + i, _mm512_fmadd_ps(pv, vv, _mm512_loadu_ps(out + i)));
  }
  for (; i < n; ++i) out[i] += p * fp16_to_fp32(v[i]);
}
#elif defined(__AVX2__) && defined(__F16C__)
inline float dot_kv(const uint16_t* k, const float* q, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    const __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(k + i)));
    const __m256 k1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(k + i + kLanes)));
    a0 = _mm256_fmadd_ps(k0, _mm256_loadu_ps(q + i), a0);
    a1 = _mm256_fmadd_ps(k1, _mm256_loadu_ps(q + i + kLanes), a1);
  }
  float s = hsum256(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) s += fp16_to_fp32(k[i]) * q[i];
  return s;
}
inline void axpy_kv(float p, const uint16_t* v, float* out, int64_t n) {
  const __m256 pv = _mm256_set1_ps(p);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256 vv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + i)));
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(pv, vv, _mm256_loadu_ps(out + i)));
  }
  for (; i < n; ++i) out[i] += p * fp16_to_fp32(v[i]);
}
#else
inline float dot_kv(const uint16_t* k, const float* q, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += fp16_to_fp32(k[i]) * q[i];
  return s;
}
inline void axpy_kv(float p, const uint16_t* v, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += p * fp16_to_fp32(v[i]);
}
#endif

// exp(x) for x <= 0, 16 or 8 at a time: Cephes' expf (the range reduction x = n ln2 + r with ln2
// in two parts, a degree-6 polynomial in r, then 2^n through the exponent bits), within 2 ulp of
// std::exp over the range softmax uses. Below -87 the result is flushed to 0, as exp's would be
// (smaller than any weight a sum of at least one 1.0 can notice).
#if defined(__AVX512F__)
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(y, n);
}
#endif
#if defined(__AVX2__)
inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n: n in [-126, 0] here, so n + 127 is a valid biased exponent
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
}
#endif

// The largest of count (>= 1) floats: a vector of running maxima (a scalar loop waited on each
// comparison, once per score of every head and token).
inline float max_of(const float* x, int64_t count) {
  int64_t j = 0;
  float top = -INFINITY;
#if defined(__AVX512F__)
  if (count >= 16) {
    __m512 m = _mm512_loadu_ps(x);
    for (j = 16; j + 16 <= count; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + j));
    top = _mm512_reduce_max_ps(m);
  }
#elif defined(__AVX2__)
  if (count >= 8) {
    __m256 m = _mm256_loadu_ps(x);
    for (j = 8; j + 8 <= count; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + j));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    top = _mm_cvtss_f32(h);
  }
#endif
  for (; j < count; ++j) top = x[j] > top ? x[j] : top;
  return top;
}

// scores[j] = exp(scores[j] - top) for j < count; returns their sum.
inline float exp_shifted(float* scores, int64_t count, float top) {
  int64_t j = 0;
#if defined(__AVX512F__)
  const __m512 shift = _mm512_set1_ps(top);
  __m512 sum = _mm512_setzero_ps();
  for (; j + 16 <= count; j += 16) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(scores + j), shift));
    _mm512_storeu_ps(scores + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (j < count) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (count - j)) - 1u);
    const __m512 e =
        exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, scores + j), shift));
    _mm512_mask_storeu_ps(scores + j, tail, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(tail, e));
    j = count;
  }
  float total = _mm512_reduce_add_ps(sum);
#elif defined(__AVX2__)
  const __m256 shift = _mm256_set1_ps(top);
  __m256 sum = _mm256_setzero_ps();
  for (; j + 8 <= count; j += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scores + j), shift));
    _mm256_storeu_ps(scores + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  float total = hsum256(sum);
#else
  float total = 0.0f;
#endif
  for (; j < count; ++j) {
    scores[j] = std::exp(scores[j] - top);
    total += scores[j];
  }
  return total;
}

// out (hd) = sum over j < count of p[j] * value row j, times `factor`. The output stays in
// registers, V vectors of kLanes at a time: an axpy into memory per position made each position's
// loads wait for the previous one's stores (perf: 40% of attention in a 256-token prefill).
#if defined(__AVX512F__)
template <int V, typename T>
inline void weighted_sum_part(const float* p, const T* value_rows, int64_t count, int64_t hd,
                              float factor, float* out) {
  __m512 acc[V];
  for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
  for (int64_t j = 0; j < count; ++j) {
    const __m512 weight = _mm512_set1_ps(p[j]);
    const T* row = value_rows + j * hd;
    for (int v = 0; v < V; ++v) {
      __m512 values;
      if constexpr (std::is_same_v<T, float>) {
        values = _mm512_loadu_ps(row + 16 * v);
      } else {
        values = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 16 * v)));
      }
      acc[v] = _mm512_fmadd_ps(weight, values, acc[v]);
    }
  }
  const __m512 scale = _mm512_set1_ps(factor);
  for (int v = 0; v < V; ++v) _mm512_storeu_ps(out + 16 * v, _mm512_mul_ps(acc[v], scale));
}
#elif defined(__AVX2__) && defined(__F16C__)
template <int V, typename T>
inline void weighted_sum_part(const float* p, const T* value_rows, int64_t count, int64_t hd,
                              float factor, float* out) {
  __m256 acc[V];
  for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t j = 0; j < count; ++j) {
    const __m256 weight = _mm256_set1_ps(p[j]);
    const T* row = value_rows + j * hd;
    for (int v = 0; v < V; ++v) {
      __m256 values;
      if constexpr (std::is_same_v<T, float>) {
        values = _mm256_loadu_ps(row + 8 * v);
      } else {
        values = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 8 * v)));
      }
      acc[v] = _mm256_fmadd_ps(weight, values, acc[v]);
    }
  }
  const __m256 scale = _mm256_set1_ps(factor);
  for (int v = 0; v < V; ++v) _mm256_storeu_ps(out + 8 * v, _mm256_mul_ps(acc[v], scale));
}
#endif

template <typename T>
inline void weighted_sum(const float* p, const T* value_rows, int64_t count, int64_t hd,
                         float factor, float* out) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__F16C__))
  constexpr int64_t kWidth = kLanes;
  constexpr int64_t kMaxVectors = 8;  // 8 accumulators leave registers for the loads
  if (hd % kWidth == 0) {
    for (int64_t c = 0; c < hd; c += kMaxVectors * kWidth) {
      const int64_t vectors = (hd - c) / kWidth < kMaxVectors ? (hd - c) / kWidth : kMaxVectors;
      const T* rows = value_rows + c;
      switch (vectors) {
        case 1: weighted_sum_part<1>(p, rows, count, hd, factor, out + c); break;
        case 2: weighted_sum_part<2>(p, rows, count, hd, factor, out + c); break;
        case 3: weighted_sum_part<3>(p, rows, count, hd, factor, out + c); break;
        case 4: weighted_sum_part<4>(p, rows, count, hd, factor, out + c); break;
        case 5: weighted_sum_part<5>(p, rows, count, hd, factor, out + c); break;
        case 6: weighted_sum_part<6>(p, rows, count, hd, factor, out + c); break;
        case 7: weighted_sum_part<7>(p, rows, count, hd, factor, out + c); break;
        default: weighted_sum_part<8>(p, rows, count, hd, factor, out + c); break;
      }
    }
    return;
  }
#endif
  std::memset(out, 0, sizeof(float) * hd);
  for (int64_t j = 0; j < count; ++j) axpy_kv(p[j], value_rows + j * hd, out, hd);
  for (int64_t i = 0; i < hd; ++i) out[i] *= factor;
}

// scores[j] = (k_j . q) * scale for the first `count` key rows. Four keys at a time when hd is a
// whole number of vectors: their four sums leave the accumulators through one shared reduction
// (three hadds) instead of a horizontal sum each.
#if defined(__AVX512F__)
inline __m256 key_chunk_sum(__m512 a) {
  return _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
}
inline __m512 load_key(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load_key(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
using KeyVector = __m512;
inline KeyVector key_fma(KeyVector k, KeyVector q, KeyVector acc) {
  return _mm512_fmadd_ps(k, q, acc);
}
inline KeyVector key_zero() { return _mm512_setzero_ps(); }
inline KeyVector key_query(const float* p) { return _mm512_loadu_ps(p); }
#define SL_KEY_BLOCKS 1
#elif defined(__AVX2__) && defined(__F16C__)
inline __m256 key_chunk_sum(__m256 a) { return a; }
inline __m256 load_key(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load_key(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
using KeyVector = __m256;
inline KeyVector key_fma(KeyVector k, KeyVector q, KeyVector acc) {
  return _mm256_fmadd_ps(k, q, acc);
}
inline KeyVector key_zero() { return _mm256_setzero_ps(); }
inline KeyVector key_query(const float* p) { return _mm256_loadu_ps(p); }
#define SL_KEY_BLOCKS 1
#endif

template <typename T>
inline void score_keys(const T* key_rows, const float* q, int64_t count, int64_t hd, float scale,
                       float* scores) {
  int64_t j = 0;
#if SL_KEY_BLOCKS
  if (hd % kLanes == 0) {
    const __m128 factor = _mm_set1_ps(scale);
    for (; j + 4 <= count; j += 4) {
      const T* k = key_rows + j * hd;
      KeyVector a0 = key_zero(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t i = 0; i < hd; i += kLanes) {
        const KeyVector qv = key_query(q + i);
        a0 = key_fma(load_key(k + i), qv, a0);
        a1 = key_fma(load_key(k + hd + i), qv, a1);
        a2 = key_fma(load_key(k + 2 * hd + i), qv, a2);
        a3 = key_fma(load_key(k + 3 * hd + i), qv, a3);
      }
      // per 128-bit half: [sum of a0's 4 lanes, a1's, a2's, a3's]; the halves added
      const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(key_chunk_sum(a0), key_chunk_sum(a1)),
                                      _mm256_hadd_ps(key_chunk_sum(a2), key_chunk_sum(a3)));
      const __m128 sums = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
      _mm_storeu_ps(scores + j, _mm_mul_ps(sums, factor));
    }
  }
#endif
  for (; j < count; ++j) scores[j] = dot_kv(key_rows + j * hd, q, hd) * scale;
}

// One query head's causal softmax attention over cached positions 0..pos of one KV head: `out`
// (hd) = softmax(q . k_j * scale) weighted sum of v_j; `scores` holds pos + 1 floats.
template <typename T>
void attend_head(const T* key_rows, const T* value_rows, const float* qh, int64_t pos, int64_t hd,
                 float scale, float* scores, float* out) {
  score_keys(key_rows, qh, pos + 1, hd, scale, scores);
  const float total = exp_shifted(scores, pos + 1, max_of(scores, pos + 1));
  weighted_sum(scores, value_rows, pos + 1, hd, 1.0f / total, out);
}

// The cache write and the attention of one KV head's query heads, for the cache's element type.
template <typename T>
void attend_group(void* keys, void* values, int64_t base, const float* kg, const float* vg,
                  float* q_heads, int64_t group_size, int64_t pos, int64_t hd, float scale,
                  float* scores, float* out_heads) {
  T* key_rows = static_cast<T*>(keys) + base;  // (positions, hd)
  T* value_rows = static_cast<T*>(values) + base;
  if (kg != nullptr) {
    store_kv(key_rows + pos * hd, kg, hd);
    store_kv(value_rows + pos * hd, vg, hd);
  }
  for (int64_t head = 0; head < group_size; ++head) {
    attend_head(key_rows, value_rows, q_heads + head * hd, pos, hd, scale, scores,
                out_heads + head * hd);
  }
}

// --- prefill attention: the queries of a run of positions share each key and value they read ---
//
// A prefill's tokens sit at consecutive positions of one row and attend over the same keys. Token
// by token (attend_head), each query head reads every key and value row again from L2, and each
// score ends in a horizontal sum. Here a unit of work is a run of up to kAttnRunTokens tokens and
// one KV head: its M = tokens x group query heads go together. Keys come in blocks of kLanes,
// transposed once into kt (hd, kLanes): vector i of kt holds dimension i of the block's keys, so a
// query's scores for the block are hd FMAs with q[i] broadcast, no horizontal sums, and each key is
// read once for all M queries. The weighted sum reads each value row once per tile of queries.
constexpr int64_t kAttnRunTokens = 16;
// Shorter runs (a batch step's rows, one token each) keep the token-by-token path, which the
// batch steps were measured and tuned on; the threshold itself was not measured.
constexpr int64_t kAttnMinRunTokens = 4;
constexpr int64_t kAttnMaxQueries = 128;  // tokens x query heads of a run (stack arrays)
#if SL_KEY_BLOCKS
#define SL_TILED_ATTENTION 1
constexpr int kAttnScoreQueries = 8;   // scores: 8 accumulators, one key vector, 8 broadcasts
constexpr int kAttnValueQueries = 4;   // weighted sum: 4 queries x up to 4 vectors of hd
constexpr int kAttnValueVectors = 4;

#if defined(__AVX512F__)
inline __m512 key_broadcast(float v) { return _mm512_set1_ps(v); }
inline void key_store(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline __m512 key_mul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
// The kLanes x kLanes transpose: r[c] holds row c on entry; column i is stored at out + i kLanes.
inline void transpose_store(__m512 r[16], float* out) {
  __m512i words[16];
  for (int c = 0; c < 16; ++c) words[c] = _mm512_castps_si512(r[c]);
  transpose16_words(words, reinterpret_cast<uint32_t*>(out));
}
#else
inline __m256 key_broadcast(float v) { return _mm256_set1_ps(v); }
inline void key_store(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
inline __m256 key_mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
inline void transpose_store(__m256 r[8], float* out) {
  __m256 t[8], u[8];
  for (int c = 0; c < 8; c += 2) {
    t[c] = _mm256_unpacklo_ps(r[c], r[c + 1]);
    t[c + 1] = _mm256_unpackhi_ps(r[c], r[c + 1]);
  }
  for (int c = 0; c < 8; c += 4) {
    u[c] = _mm256_shuffle_ps(t[c], t[c + 2], 0x44);
    u[c + 1] = _mm256_shuffle_ps(t[c], t[c + 2], 0xEE);
    u[c + 2] = _mm256_shuffle_ps(t[c + 1], t[c + 3], 0x44);
    u[c + 3] = _mm256_shuffle_ps(t[c + 1], t[c + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(out + i * 8, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    _mm256_storeu_ps(out + (i + 4) * 8, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
}
#endif

// kt (hd, kLanes) = the `width` key rows from `rows` (fp32 or fp16, hd each) transposed; lanes
// past width are zeros. hd is a multiple of kLanes.
template <typename T>
inline void transpose_keys(const T* rows, int64_t width, int64_t hd, float* kt) {
  for (int64_t i0 = 0; i0 < hd; i0 += kLanes) {
    KeyVector r[kLanes];
    for (int64_t c = 0; c < kLanes; ++c) r[c] = c < width ? load_key(rows + c * hd + i0) : key_zero();
    transpose_store(r, kt + i0 * kLanes);
  }
}

// scores[q][j0 .. j0 + kLanes) = scale * (kt's keys . query q) for Q queries.
template <int Q>
inline void score_key_block(const float* kt, int64_t hd, const float* const* queries, float scale,
                            float* const* scores, int64_t j0) {
  KeyVector acc[Q];
  for (int q = 0; q < Q; ++q) acc[q] = key_zero();
  for (int64_t i = 0; i < hd; ++i) {
    const KeyVector k = key_query(kt + i * kLanes);
    for (int q = 0; q < Q; ++q) acc[q] = key_fma(key_broadcast(queries[q][i]), k, acc[q]);
  }
  const KeyVector factor = key_broadcast(scale);
  for (int q = 0; q < Q; ++q) key_store(scores[q] + j0, key_mul(acc[q], factor));
}

// out[q][c .. c + V kLanes) = sum over j < count of p[q][j] * value row j, for Q queries (p of
// positions a query does not see are zeros).
template <int Q, int V, typename T>
inline void weigh_values(const T* value_rows, int64_t hd, int64_t c, int64_t count,
                         const float* const* p, const float* factors, float* const* out) {
  KeyVector acc[Q][V];
  for (int q = 0; q < Q; ++q) {
    for (int v = 0; v < V; ++v) acc[q][v] = key_zero();
  }
  for (int64_t j = 0; j < count; ++j) {
    const T* row = value_rows + j * hd + c;
    KeyVector values[V];
    for (int v = 0; v < V; ++v) {
      values[v] = load_key(row + v * kLanes);
      // In a register: else GCC folds the load into each query's FMA (Q loads instead of one).
      __asm__("" : "+x"(values[v]));
    }
    for (int q = 0; q < Q; ++q) {
      const KeyVector weight = key_broadcast(p[q][j]);
      for (int v = 0; v < V; ++v) acc[q][v] = key_fma(weight, values[v], acc[q][v]);
    }
  }
  for (int q = 0; q < Q; ++q) {
    const KeyVector factor = key_broadcast(factors[q]);
    for (int v = 0; v < V; ++v) key_store(out[q] + c + v * kLanes, key_mul(acc[q][v], factor));
  }
}

template <int V, typename T>
inline void weigh_values_queries(int queries, const T* value_rows, int64_t hd, int64_t c,
                                 int64_t count, const float* const* p, const float* factors,
                                 float* const* out) {
  switch (queries) {
    case 1: weigh_values<1, V>(value_rows, hd, c, count, p, factors, out); break;
    case 2: weigh_values<2, V>(value_rows, hd, c, count, p, factors, out); break;
    case 3: weigh_values<3, V>(value_rows, hd, c, count, p, factors, out); break;
    default: weigh_values<4, V>(value_rows, hd, c, count, p, factors, out); break;
  }
}

// Causal attention of M queries (query m: its hd values at queries[m], its output at outs[m],
// positions 0 .. counts[m] - 1 of the KV head's rows; counts never decrease with m) over keys
// and values (positions, hd). `scores` holds M rows of score_stride floats (>= the largest
// count rounded up to kLanes), kt hd x kLanes floats. M <= kAttnMaxQueries.
template <typename T>
void attend_run(const T* key_rows, const T* value_rows, const float* const* queries,
                const int64_t* counts, int64_t M, int64_t hd, float scale, float* scores,
                int64_t score_stride, float* kt, float* const* outs) {
  const int64_t last = counts[M - 1];
  float* rows[kAttnMaxQueries];
  float factors[kAttnMaxQueries];
  for (int64_t m = 0; m < M; ++m) rows[m] = scores + m * score_stride;
  // Scores: key block by key block; a query whose count ends before the block skips it.
  for (int64_t j0 = 0; j0 < last; j0 += kLanes) {
    const int64_t width = last - j0 < kLanes ? last - j0 : kLanes;
    transpose_keys(key_rows + j0 * hd, width, hd, kt);
    int64_t m = 0;
    while (m < M && counts[m] <= j0) ++m;  // these queries see none of this block
    for (; m + kAttnScoreQueries <= M; m += kAttnScoreQueries) {
      score_key_block<kAttnScoreQueries>(kt, hd, queries + m, scale, rows + m, j0);
    }
    switch (M - m) {
      case 0: break;
      case 1: score_key_block<1>(kt, hd, queries + m, scale, rows + m, j0); break;
      case 2: score_key_block<2>(kt, hd, queries + m, scale, rows + m, j0); break;
      case 3: score_key_block<3>(kt, hd, queries + m, scale, rows + m, j0); break;
      case 4: score_key_block<4>(kt, hd, queries + m, scale, rows + m, j0); break;
      case 5: score_key_block<5>(kt, hd, queries + m, scale, rows + m, j0); break;
      case 6: score_key_block<6>(kt, hd, queries + m, scale, rows + m, j0); break;
      default: score_key_block<7>(kt, hd, queries + m, scale, rows + m, j0); break;
    }
  }
  // Softmax per query over its own positions; the positions it does not see (up to the tile's
  // last) weigh zero.
  for (int64_t m = 0; m < M; ++m) {
    const int64_t count = counts[m];
    const float top = max_of(rows[m], count);
    factors[m] = 1.0f / exp_shifted(rows[m], count, top);
    for (int64_t j = count; j < last; ++j) rows[m][j] = 0.0f;
  }
  for (int64_t m = 0; m < M; m += kAttnValueQueries) {
    const int queries_here = static_cast<int>(M - m < kAttnValueQueries ? M - m : kAttnValueQueries);
    const int64_t count = counts[m + queries_here - 1];
    for (int64_t c = 0; c < hd; c += kAttnValueVectors * kLanes) {
      const int64_t vectors = (hd - c) / kLanes < kAttnValueVectors ? (hd - c) / kLanes
                                                                    : kAttnValueVectors;
      switch (vectors) {
        case 1: weigh_values_queries<1>(queries_here, value_rows, hd, c, count, rows + m, factors + m, outs + m); break;
        case 2: weigh_values_queries<2>(queries_here, value_rows, hd, c, count, rows + m, factors + m, outs + m); break;
        case 3: weigh_values_queries<3>(queries_here, value_rows, hd, c, count, rows + m, factors + m, outs + m); break;
        default: weigh_values_queries<4>(queries_here, value_rows, hd, c, count, rows + m, factors + m, outs + m); break;
      }
    }
  }
}
#endif

// The integer dot of one q8/q4 weight block with 32 int8 input codes (the portable fallback).
template <int kType>
inline int32_t q_block_dot(const uint8_t* block, const int8_t* q) {
  int32_t total = 0;
  for (int64_t j = 0; j < kQBlock; ++j) {
    int32_t code;
    if (kType == kQ8) {
      code = static_cast<int8_t>(block[j]);
    } else {
      const uint8_t byte = block[j % 16];
      code = (j < 16 ? byte & 0x0F : byte >> 4) - 8;
    }
    total += code * q[j];
  }
  return total;
}


inline float bf16_to_fp32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

// x (K) rounded to bf16 precision in place (nearest even; kept as fp32): the inputs of every bf16
// GEMV and GEMM, so that decode steps, batched rows and prefill all multiply the same values, and
// the bf16 tiles can feed them to vdpbf16ps (see bf16_dot_tile). Infinities and NaNs pass.
inline void round_to_bf16_precision(float* x, int64_t K) {
  int64_t k = 0;
#if defined(__AVX2__)
  const __m256i exponent = _mm256_set1_epi32(0x7F800000);
  const __m256i half = _mm256_set1_epi32(0x7FFF);
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  for (; k + 8 <= K; k += 8) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), one);
    const __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(half, odd));
    // Infinities and NaNs (exponent all ones) keep their bits.
    const __m256i special = _mm256_cmpeq_epi32(_mm256_and_si256(bits, exponent), exponent);
    const __m256i chosen = _mm256_blendv_epi8(_mm256_and_si256(rounded, high), bits, special);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(x + k), chosen);
  }
#endif
  for (; k < K; ++k) {
    uint32_t bits;
    std::memcpy(&bits, x + k, 4);
    if ((bits & 0x7F800000u) == 0x7F800000u) continue;  // infinity or NaN: kept
    bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
    std::memcpy(x + k, &bits, 4);
  }
}

// Quantizes x (K) into int8 blocks: d = amax / 127 per block, q = round-half-even(x / d), codes
// zero past K (they meet the weights' zero padding). Each value's error is at most d / 2.
inline void quantize_input(const float* x, int64_t K, int8_t* q, float* d, float* sums) {
  const int64_t blocks = q_blocks(K);
  int64_t b = 0;
#if defined(__AVX2__)
  // Whole blocks 32 values at a time (the scalar loop below called libm's fmax per value: 6% of a
  // q4 prefill). The same results: max of |x| is exact, cvtps rounds half to even as nearbyint
  // does in the default rounding mode, and the codes (|q| <= 127) pack without saturating.
  const __m256 magnitude_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256i byte_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (; (b + 1) * kQBlock <= K; ++b) {
    const float* xb = x + b * kQBlock;
    __m256 v[4];
    for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(xb + 8 * i);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], magnitude_mask),
                                           _mm256_and_ps(v[1], magnitude_mask)),
                             _mm256_max_ps(_mm256_and_ps(v[2], magnitude_mask),
                                           _mm256_and_ps(v[3], magnitude_mask)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h);
    const float scale = amax / 127.0f;
    const __m256 inverse = _mm256_set1_ps(scale > 0.0f ? 1.0f / scale : 0.0f);
    d[b] = scale;
    __m256i codes[4];
    for (int i = 0; i < 4; ++i) codes[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inverse));
    // packs interleave 128-bit lanes: dwords come out as (0-3 of each input, then 4-7 of each)
    const __m256i bytes = _mm256_permutevar8x32_epi32(
        _mm256_packs_epi16(_mm256_packs_epi32(codes[0], codes[1]),
                           _mm256_packs_epi32(codes[2], codes[3])),
        byte_order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kQBlock), bytes);
    const __m256i total = _mm256_add_epi32(_mm256_add_epi32(codes[0], codes[1]),
                                           _mm256_add_epi32(codes[2], codes[3]));
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
    sums[b] = static_cast<float>(_mm_cvtsi128_si32(t));
  }
#endif
  for (; b < blocks; ++b) {
    const int64_t k0 = b * kQBlock;
    const int64_t n = K - k0 < kQBlock ? K - k0 : kQBlock;
    float amax = 0.0f;
    for (int64_t j = 0; j < n; ++j) amax = std::fmax(amax, std::fabs(x[k0 + j]));
    const float scale = amax / 127.0f;
    const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
    d[b] = scale;
    int32_t sum = 0;
    for (int64_t j = 0; j < n; ++j) {
      q[k0 + j] = static_cast<int8_t>(std::nearbyint(x[k0 + j] * inverse));
      sum += q[k0 + j];
    }
    for (int64_t j = n; j < kQBlock; ++j) q[k0 + j] = 0;
    sums[b] = static_cast<float>(sum);
  }
}

struct F32Format {
  static constexpr int kBlock = kRowBlock;
  static constexpr bool kIntInput = false;
  static constexpr bool kPaddedRows = false;
  static int64_t row_bytes(int64_t K) { return 4 * K; }
  template <int R>
  static void rows(const Mat& W, int64_t r, int64_t K, const Input& in, float* out) {
    const float* w = static_cast<const float*>(W.w) + r * K;
    if constexpr (R == 1) {
      out[0] = dot(w, in.x, K);
    } else {
      dot_rows<R>(w, K, in.x, out);
    }
  }
};

#if defined(__AVX2__)
// Eight int32 sums of 4 products u[k] * s[k] each, u unsigned and s signed bytes: maddubs (int16
// pair sums; the callers keep them below 32767) then madd with ones, or VNNI's dpbusd.
inline __m256i dot_u8_i8(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

// 16 bytes of q4 codes -> 32 unsigned bytes in [0, 15] (code + 8): low nibbles are values 0..15
// of the block, high nibbles values 16..31.
inline __m256i unpack_q4(const uint8_t* p) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

inline __m256i load_bytes(const void* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// 8 bf16 values widened to fp32 (a bf16 is the top half of an fp32).
inline __m256 load_bf16(const uint16_t* p) {
  const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16));
}
#endif

// q8 (kQ8) and q4 (kQ4) rows against the int8 blocks of the input. Per block and row: one integer
// dot of 32 products, then acc += (d_w * d_x) * dot in fp32.
// - q8: maddubs wants one unsigned operand, so the input's signs move onto the weights:
//   |x| * (w * sign(x)); |x|, |w| <= 127 keep the int16 pair sums <= 2 * 127 * 127.
// - q4: the stored codes u = q + 8 are unsigned already: sum (u - 8) x = sum u x - 8 sum x, with
//   the second term from the input's block sums (pair sums <= 2 * 15 * 127).
// Scales go 8 blocks at a time: 8 fp16 weight scales converted at once, times the 8 input scales.
#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#define SL_Q_SIMD 1
#else
#define SL_Q_SIMD 0
#endif

// The q8/q4 row group (the packed layout's, scratchlm.inference.kernels.quant.ROW_GROUP) is also
// the register block. Reading a group as one sequential stream (not 4 streams of short rows)
// measured 10-12.5 Gweights/s against 7 (q8, K = 768, one core).
constexpr int kQRowGroup = 4;

template <int32_t kType>
struct QFormat {
  static constexpr int kBlock = kQRowGroup;
  static constexpr bool kIntInput = true;
  static constexpr bool kPaddedRows = true;  // whole groups only; rows past N are zeros
  static constexpr int64_t kBlockBytes = kType == kQ8 ? kQBlock : kQBlock / 2;
  static int64_t row_bytes(int64_t K) { return q_blocks(K) * (kBlockBytes + 2); }

#if SL_Q_SIMD
  // The integer dot of the block at p with an input block (x, |x|).
  static inline __m256 block_dot(const uint8_t* p, __m256i x, __m256i magnitude) {
    if constexpr (kType == kQ8) {
      return _mm256_cvtepi32_ps(dot_u8_i8(magnitude, _mm256_sign_epi8(load_bytes(p), x)));
    } else {
      return _mm256_cvtepi32_ps(dot_u8_i8(unpack_q4(p), x));
    }
  }
#endif

  // Rows r .. r + R - 1 of one group (r a multiple of R = kQRowGroup): block b of row i lies at
  // w + (b * R + i) * kBlockBytes.
  template <int R>
  static void rows(const Mat& W, int64_t r, int64_t K, const Input& in, float* out) {
    static_assert(R == kQRowGroup, "q8/q4 rows go by whole groups");
    const int64_t blocks = q_blocks(K);
    const uint8_t* w = static_cast<const uint8_t*>(W.w) + r * blocks * kBlockBytes;
    const uint16_t* s = W.s + r * blocks;
    float offset[R];  // q4: sum over blocks of d_w d_x (-8 sum x)
    for (int i = 0; i < R; ++i) offset[i] = 0.0f;
    int64_t b = 0;
#if SL_Q_SIMD
    __m256 acc[R];
    __m256 offsets[R];
    for (int i = 0; i < R; ++i) acc[i] = offsets[i] = _mm256_setzero_ps();
    alignas(32) float scale[R][8];
    for (; b + 8 <= blocks; b += 8) {
      const __m256 dx = _mm256_loadu_ps(in.d + b);
      // Prefetch 1 KB ahead in the stream (into the next group near a group's end; past the
      // matrix's end for its last rows, which is harmless: prefetches never fault).
      const char* ahead = reinterpret_cast<const char*>(w + b * R * kBlockBytes) + 1024;
      for (int64_t line = 0; line < 8 * R * kBlockBytes; line += 64) {
        _mm_prefetch(ahead + line, _MM_HINT_T0);
      }
      for (int i = 0; i < R; ++i) {
        const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i * blocks + b));
        const __m256 combined = _mm256_mul_ps(_mm256_cvtph_ps(half), dx);
        _mm256_store_ps(scale[i], combined);
        if constexpr (kType == kQ4) {
          const __m256 minus8_sums =
              _mm256_mul_ps(_mm256_loadu_ps(in.sums + b), _mm256_set1_ps(-8.0f));
          offsets[i] = _mm256_fmadd_ps(combined, minus8_sums, offsets[i]);
        }
      }
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        const __m256i x = load_bytes(in.q + (b + j) * kQBlock);
        const __m256i magnitude = kType == kQ8 ? _mm256_sign_epi8(x, x) : x;
        for (int i = 0; i < R; ++i) {
          const __m256 dot = block_dot(w + ((b + j) * R + i) * kBlockBytes, x, magnitude);
          acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(&scale[i][j]), dot, acc[i]);
        }
      }
    }
    for (; b < blocks; ++b) {  // the last blocks (fewer than 8)
      const __m256i x = load_bytes(in.q + b * kQBlock);
      const __m256i magnitude = kType == kQ8 ? _mm256_sign_epi8(x, x) : x;
      for (int i = 0; i < R; ++i) {
        const float combined = fp16_to_fp32(s[i * blocks + b]) * in.d[b];
        const __m256 dot = block_dot(w + (b * R + i) * kBlockBytes, x, magnitude);
        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(combined), dot, acc[i]);
        if constexpr (kType == kQ4) offset[i] += combined * -8.0f * in.sums[b];
      }
    }
    for (int i = 0; i < R; ++i) out[i] = hsum256(acc[i]) + hsum256(offsets[i]) + offset[i];
#else
    for (int i = 0; i < R; ++i) {
      float sum = 0.0f;
      for (b = 0; b < blocks; ++b) {
        const uint8_t* block = w + (b * R + i) * kBlockBytes;
        const int32_t total = q_block_dot<kType>(block, in.q + b * kQBlock);
        sum += fp16_to_fp32(s[i * blocks + b]) * in.d[b] * static_cast<float>(total);
      }
      out[i] = sum + offset[i];
    }
#endif
  }
};

// One row at a time: the matrix is read as one sequential stream. Blocks of 8 rows (8 streams of
// short rows, the fp32 format's way) measured half the speed: llama-42m decode, ~230-250 against
// 430-500 tokens/s with 2 threads and 167 against 326 with 1 (2026-12-03, idle AMD EPYC), where
// fp32 shows no such difference between 1 and 16 rows.
struct Bf16Format {
  static constexpr int kBlock = 1;
  static constexpr bool kIntInput = false;
  static constexpr bool kPaddedRows = false;
  static int64_t row_bytes(int64_t K) { return 2 * K; }
  template <int R>
  static void rows(const Mat& W, int64_t r, int64_t K, const Input& in, float* out) {
    static_assert(R == 1, "bf16 rows go one at a time");
    const uint16_t* w = static_cast<const uint16_t*>(W.w) + r * K;
    const float* x = in.x;
    float sum = 0.0f;
    int64_t k = 0;
#if defined(__AVX2__)
    // Four accumulators: one chain would wait on each FMA's latency.
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; k + 32 <= K; k += 32) {
      a0 = _mm256_fmadd_ps(load_bf16(w + k), _mm256_loadu_ps(x + k), a0);
      a1 = _mm256_fmadd_ps(load_bf16(w + k + 8), _mm256_loadu_ps(x + k + 8), a1);
      a2 = _mm256_fmadd_ps(load_bf16(w + k + 16), _mm256_loadu_ps(x + k + 16), a2);
      a3 = _mm256_fmadd_ps(load_bf16(w + k + 24), _mm256_loadu_ps(x + k + 24), a3);
    }
    for (; k + 8 <= K; k += 8) a0 = _mm256_fmadd_ps(load_bf16(w + k), _mm256_loadu_ps(x + k), a0);
    sum = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
    for (; k < K; ++k) sum += bf16_to_fp32(w[k]) * x[k];
    out[0] = sum;
  }
};

// y[r] = epilogue(r, dot(W[r, :], input)) for rows [r0, r1) of W (N, K): Fmt::kBlock rows at a
// time, then 4, then 1; or, for row-padded formats, whole groups (r0 is a multiple of kBlock)
// whose padding rows are computed but not passed on.
template <typename Fmt, typename Epilogue>
inline void gemv_rows(const Mat& W, const Input& in, int64_t K, int64_t r0, int64_t r1,
                      Epilogue epilogue) {
  int64_t r = r0;
  float out[Fmt::kBlock];
  if constexpr (Fmt::kPaddedRows) {
    for (; r < r1; r += Fmt::kBlock) {
      Fmt::template rows<Fmt::kBlock>(W, r, K, in, out);
      for (int i = 0; i < Fmt::kBlock && r + i < r1; ++i) epilogue(r + i, out[i]);
    }
    return;
  }
  for (; r + Fmt::kBlock <= r1; r += Fmt::kBlock) {
    Fmt::template rows<Fmt::kBlock>(W, r, K, in, out);
    for (int i = 0; i < Fmt::kBlock; ++i) epilogue(r + i, out[i]);
  }
  if constexpr (Fmt::kBlock > 4 && !Fmt::kPaddedRows) {
    for (; r + 4 <= r1; r += 4) {
      Fmt::template rows<4>(W, r, K, in, out);
      for (int i = 0; i < 4; ++i) epilogue(r + i, out[i]);
    }
  }
  if constexpr (!Fmt::kPaddedRows) {
    for (; r < r1; ++r) {
      Fmt::template rows<1>(W, r, K, in, out);
      epilogue(r, out[0]);
    }
  }
}

// --- the thread team ------------------------------------------------------------------------

// A phase is `chunks` independent pieces of work, run as fn(ctx, chunk, thread) with thread 0 the
// caller and 1..helpers the helper threads (thread indexes per-thread scratch).
using PhaseFn = void (*)(void* ctx, int64_t chunk, int thread);

inline void cpu_relax() {
#if defined(__AVX2__) || defined(__AVX512F__)
  _mm_pause();
#endif
}

inline uint32_t* futex_word(std::atomic<uint32_t>* word) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex needs a plain word");
  return reinterpret_cast<uint32_t*>(word);
}

inline void futex_wait(std::atomic<uint32_t>* word, uint32_t expected) {
  syscall(SYS_futex, futex_word(word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}

inline void futex_wake_all(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, futex_word(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

using Clock = std::chrono::steady_clock;

// The claim word packs (phase: 24 bits | chunk count: 20 bits | next chunk: 20 bits), so one
// compare-and-swap both checks that a phase is still current and takes its next chunk.
constexpr int kChunkBits = 20;
constexpr uint64_t kChunkMask = (uint64_t{1} << kChunkBits) - 1;
constexpr int64_t kMaxChunks = static_cast<int64_t>(kChunkMask);

inline uint64_t pack(uint32_t phase, int64_t chunks, int64_t next) {
  return (static_cast<uint64_t>(phase & 0xFFFFFF) << (2 * kChunkBits)) |
         (static_cast<uint64_t>(chunks) << kChunkBits) | static_cast<uint64_t>(next);
}
inline uint32_t phase_of(uint64_t word) { return static_cast<uint32_t>(word >> (2 * kChunkBits)); }
inline int64_t chunks_of(uint64_t word) {
  return static_cast<int64_t>((word >> kChunkBits) & kChunkMask);
}
inline int64_t next_of(uint64_t word) { return static_cast<int64_t>(word & kChunkMask); }

class Team {
 public:
  explicit Team(int helpers) {
    for (int id = 1; id <= helpers; ++id) threads_.emplace_back([this, id] { helper_loop(id); });
  }

  int helpers() const { return static_cast<int>(threads_.size()); }

  void stop() {
    stop_.store(true);
    phase_word_.fetch_add(1);
    futex_wake_all(&phase_word_);
    for (std::thread& thread : threads_) thread.join();
  }

  // Runs every chunk of the phase (the caller takes part) and returns when all are done.
  void run(int64_t chunks, PhaseFn fn, void* ctx) {
    fn_.store(fn, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    phase_ = (phase_ + 1) & 0xFFFFFF;
    // Release: a helper whose claim succeeds sees fn_, ctx_ and done_ as set above.
    claim_.store(pack(phase_, chunks, 0), std::memory_order_release);
    phase_word_.store(phase_);
    if (sleepers_.load() > 0) futex_wake_all(&phase_word_);
    int64_t mine = work(phase_, 0);
    // Wait only for chunks a helper claimed and is still running. Spin briefly, then yield the
    // core: if that helper was preempted, it may be waiting for this very core.
    const Clock::time_point start = Clock::now();
    int64_t spins = 0;
    while (done_.load(std::memory_order_acquire) + mine < chunks) {
      if (++spins < 2000 || Clock::now() - start < std::chrono::microseconds(50)) {
        cpu_relax();
      } else {
        sched_yield();
      }
    }
  }

 private:
  // Claims and runs chunks of `phase` while any are left; returns how many this thread ran (the
  // caller counts its own; helpers publish theirs in done_).
  int64_t work(uint32_t phase, int thread) {
    int64_t ran = 0;
    uint64_t word = claim_.load(std::memory_order_acquire);
    for (;;) {
      if (phase_of(word) != phase || next_of(word) >= chunks_of(word)) break;
      if (!claim_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        continue;  // `word` now holds the current value: re-check it
      }
      // The claimed chunk is unfinished, so the caller cannot have moved to another phase: fn_
      // and ctx_ belong to this claim.
      fn_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), next_of(word),
                                          thread);
      ++ran;
      if (thread != 0) done_.fetch_add(1, std::memory_order_release);
      word = claim_.load(std::memory_order_acquire);
    }
    return ran;
  }

  void helper_loop(int id) {
    uint32_t seen = phase_word_.load();
    while (!stop_.load(std::memory_order_relaxed)) {
      const uint64_t word = claim_.load(std::memory_order_acquire);
      if (phase_of(word) != seen) {
        seen = phase_of(word);
        work(seen, id);
        continue;
      }
      // Idle: spin ~200 us (phases follow each other within microseconds, tokens within tens),
      // then sleep until the next phase is published.
      const Clock::time_point start = Clock::now();
      bool fresh = false;
      for (int64_t spins = 0;; ++spins) {
        if (phase_of(claim_.load(std::memory_order_acquire)) != seen) {
          fresh = true;
          break;
        }
        if ((spins & 255) == 0 && Clock::now() - start > std::chrono::microseconds(200)) break;
        cpu_relax();
      }
      if (fresh || stop_.load()) continue;
      // Register as a sleeper, then sleep unless a phase came in the meantime. run() stores
      // phase_word_ before it reads sleepers_ (both sequentially consistent), so either it sees
      // this sleeper and wakes it, or `expected` is already the new value and the wait returns.
      sleepers_.fetch_add(1);
      const uint32_t expected = phase_word_.load();
      if (phase_of(claim_.load()) == seen && !stop_.load()) futex_wait(&phase_word_, expected);
      sleepers_.fetch_sub(1);
    }
  }

  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<PhaseFn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<uint32_t> phase_word_{0};  // the futex helpers sleep on
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  uint32_t phase_ = 0;  // written by the caller only
  std::vector<std::thread> threads_;
};

// One team per process, used by one step at a time. A concurrent step (another Python thread)
// runs on its calling thread alone instead of waiting. Both are leaked on purpose: helper threads
// must not be joined by static destructors at exit, and after fork() the child (which has no
// helpers) simply starts a new team.
std::mutex* g_team_mutex = new std::mutex();
Team* g_team = nullptr;

void reset_after_fork() {
  g_team_mutex = new std::mutex();
  g_team = nullptr;
}

__attribute__((constructor)) void register_fork_handler() {
  pthread_atfork(nullptr, nullptr, reset_after_fork);
}

// The team for this call (`threads` - 1 helpers), or none: run phases on the caller only.
class Runner {
 public:
  explicit Runner(int threads) : lock_(*g_team_mutex, std::try_to_lock) {
    if (threads <= 1 || !lock_.owns_lock()) return;
    if (g_team == nullptr || g_team->helpers() != threads - 1) {
      if (g_team != nullptr) {
        g_team->stop();
        delete g_team;
      }
      g_team = new Team(threads - 1);
    }
    team_ = g_team;
  }

  int threads() const { return team_ ? team_->helpers() + 1 : 1; }

  template <typename F>
  void run(int64_t chunks, F& body) {
    if (chunks <= 0) return;
    if (team_ == nullptr || chunks == 1) {
      for (int64_t chunk = 0; chunk < chunks; ++chunk) body(chunk, 0);
      return;
    }
    team_->run(
        chunks, [](void* ctx, int64_t chunk, int thread) { (*static_cast<F*>(ctx))(chunk, thread); },
        &body);
  }

 private:
  std::unique_lock<std::mutex> lock_;
  Team* team_ = nullptr;
};

// A GEMV phase over the rows of `segments` matrices (rows[i] rows each, `row_bytes` bytes of
// weights per row): chunks of rows that cover every row once; body(segment, r0, r1, thread).
// Chunks hold ~128 KB of weights (a multiple of `block` rows, the format's register block), and
// at least ~4 per thread so small matrices still split evenly.
template <typename Body>
void for_rows(Runner& runner, const int64_t* rows, int segments, int64_t row_bytes, int block,
              Body body) {
  int64_t total = 0;
  for (int i = 0; i < segments; ++i) total += rows[i];
  int64_t chunk = 131072 / (row_bytes > 0 ? row_bytes : 1);
  const int64_t even = (total + 4 * runner.threads() - 1) / (4 * runner.threads());
  chunk = chunk < even ? chunk : even;
  chunk = (chunk + block - 1) / block * block;
  int64_t chunks = 0;
  for (int i = 0; i < segments; ++i) chunks += (rows[i] + chunk - 1) / chunk;
  while (chunks > kMaxChunks) {  // only for absurdly large matrices
    chunk *= 2;
    chunks = 0;
    for (int i = 0; i < segments; ++i) chunks += (rows[i] + chunk - 1) / chunk;
  }
  auto run_chunk = [&](int64_t index, int thread) {
    int segment = 0;
    while (index >= (rows[segment] + chunk - 1) / chunk) {
      index -= (rows[segment] + chunk - 1) / chunk;
      ++segment;
    }
    const int64_t r0 = index * chunk;
    const int64_t r1 = r0 + chunk < rows[segment] ? r0 + chunk : rows[segment];
    body(segment, r0, r1, thread);
  };
  runner.run(chunks, run_chunk);
}

// out = norm(x) * w (+ b), over n values (RMSNorm or biased-variance LayerNorm, as PyTorch).
inline void norm(const float* x, const float* w, const float* b, int64_t n, float eps, int32_t kind,
                 float* out) {
  if (kind == kRmsNorm) {
    float sum_sq = 0.0f;
    for (int64_t i = 0; i < n; ++i) sum_sq += x[i] * x[i];
    const float scale = 1.0f / std::sqrt(sum_sq / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
    return;
  }
  float mean = 0.0f;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<float>(n);
  float var = 0.0f;
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= static_cast<float>(n);
  const float scale = 1.0f / std::sqrt(var + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] - mean) * scale * w[i] + (b ? b[i] : 0.0f);
}

// Rotate-half RoPE in place on one head (head_dim values) with the cos/sin rows of its position.
inline void rope(float* x, const float* cos, const float* sin, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float first = x[i];
    const float second = x[i + half];
    x[i] = first * cos[i] - second * sin[i];
    x[i + half] = second * cos[i + half] + first * sin[i + half];
  }
}

inline float activation(float v, int32_t kind, float slope) {
  switch (kind) {
    case kGelu:
      return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
    case kGeluTanh: {
      const float inner = 0.79788456080286536f * (v + 0.044715f * v * v * v);
      return 0.5f * v * (1.0f + std::tanh(inner));
    }
    case kLeakyRelu:
      return v > 0.0f ? v : v * slope;
    case kRelu2:
      return v > 0.0f ? v * v : 0.0f;
    default:  // kSwiGlu's silu, applied to the gate
      return v / (1.0f + std::exp(-v));
  }
}

inline float bias_at(const float* b, int64_t r) { return b ? b[r] : 0.0f; }

// x = silu(x) = x / (1 + exp(-x)) for n values, a vector at a time (a scalar exp per value took 2%
// of a 256-token prefill). With e = exp(-|x|) <= 1: x / (1 + e) for x >= 0, x e / (1 + e) below.
inline void silu_in_place(float* x, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(v)));
    const __mmask16 negative = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 numerator = _mm512_mask_mul_ps(v, negative, v, e);
    _mm512_storeu_ps(x + i, _mm512_div_ps(numerator, _mm512_add_ps(one, e)));
  }
#elif defined(__AVX2__)
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 e = exp_nonpositive(_mm256_or_ps(v, sign));  // -|v|
    const __m256 negative = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256 numerator = _mm256_blendv_ps(v, _mm256_mul_ps(v, e), negative);
    _mm256_storeu_ps(x + i, _mm256_div_ps(numerator, _mm256_add_ps(one, e)));
  }
#endif
  for (; i < n; ++i) x[i] = activation(x[i], kSwiGlu, 0.0f);
}

// Workspace layout (floats): [x: d][h: d][qkv: n_q + 2 n_kv][attn: n_q][ffn: 2 ffn]
// [input codes: widest / 4][input scales, sums: 2 x widest / 32]
// [per thread: scores: max_positions], each part padded to 16 floats; `widest` is the longest GEMV
// input (d, n_q or ffn) rounded up to 32.
inline int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

inline int64_t widest_input(int64_t d_model, int64_t n_q, int64_t ffn_hidden) {
  int64_t widest = d_model > n_q ? d_model : n_q;
  widest = widest > ffn_hidden ? widest : ffn_hidden;
  return q_blocks(widest) * kQBlock;
}

struct Workspace {
  float* x;       // the residual stream (d)
  float* h;       // its normalized copy, the input of the next GEMV (d)
  float* qkv;     // q (n_q), k (n_kv), v (n_kv)
  float* attn;    // attention output, the input of Wo (n_q)
  float* ffn;     // MLP hidden (ffn), then the SwiGLU gate (ffn)
  int8_t* codes;  // the current GEMV input's int8 blocks (q8/q4 weights only)
  float* code_scales;
  float* code_sums;
  float* scores;  // per thread: attention weights over positions (max_positions)
  int64_t scores_stride;
};

Workspace carve(const SlModel* m, int64_t max_positions) {
  const int64_t n_q = m->n_head * m->head_dim;
  const int64_t n_kv = m->n_kv_head * m->head_dim;
  const int64_t widest = widest_input(m->d_model, n_q, m->ffn_hidden);
  Workspace w;
  w.x = m->workspace;
  w.h = w.x + round16(m->d_model);
  w.qkv = w.h + round16(m->d_model);
  w.attn = w.qkv + round16(n_q + 2 * n_kv);
  w.ffn = w.attn + round16(n_q);
  w.codes = reinterpret_cast<int8_t*>(w.ffn + round16(2 * m->ffn_hidden));
  w.code_scales = w.ffn + round16(2 * m->ffn_hidden) + round16(widest / 4);
  w.code_sums = w.code_scales + round16(widest / kQBlock);
  w.scores = w.code_sums + round16(widest / kQBlock);
  w.scores_stride = round16(max_positions);
  return w;
}

// The GEMV input for a format: x itself (bf16: rounded in place to bf16 precision), or (q8/q4) x
// and its int8 blocks in the workspace.
template <typename Fmt>
inline Input prepare_input(float* x, int64_t K, const Workspace& ws) {
  Input in{x, ws.codes, ws.code_scales, ws.code_sums};
  if constexpr (Fmt::kIntInput) quantize_input(x, K, in.q, in.d, in.sums);
  if constexpr (std::is_same_v<Fmt, Bf16Format>) round_to_bf16_precision(x, K);
  return in;
}

// y (N) = W (N, K) x (K) (+ b) in format Fmt.
template <typename Fmt>
void gemv_format(const Mat& W, const float* b, const float* x, float* y, int64_t N, int64_t K,
                 int threads) {
  std::vector<int8_t> codes(static_cast<size_t>(q_blocks(K) * kQBlock));
  std::vector<float> scales(static_cast<size_t>(q_blocks(K)));
  std::vector<float> sums(static_cast<size_t>(q_blocks(K)));
  Input in{x, codes.data(), scales.data(), sums.data()};
  if constexpr (Fmt::kIntInput) quantize_input(x, K, in.q, in.d, in.sums);
  std::vector<float> rounded;
  if constexpr (std::is_same_v<Fmt, Bf16Format>) {
    rounded.assign(x, x + K);
    round_to_bf16_precision(rounded.data(), K);
    in.x = rounded.data();
  }
  Runner runner(threads);
  const int64_t rows[1] = {N};
  for_rows(runner, rows, 1, Fmt::row_bytes(K), Fmt::kBlock, [&](int, int64_t r0, int64_t r1, int) {
    gemv_rows<Fmt>(W, in, K, r0, r1, [&](int64_t r, float v) { y[r] = v + bias_at(b, r); });
  });
}

template <typename Fmt>
int decode_step(const SlModel* m, int64_t token, int64_t pos, float* logits, int threads,
                int64_t max_positions) {
  const int64_t d = m->d_model;
  const int64_t hd = m->head_dim;
  const int64_t n_q = m->n_head * hd;
  const int64_t n_kv = m->n_kv_head * hd;
  const int64_t group = m->n_head / m->n_kv_head;  // query heads per KV head
  const int64_t ffn = m->ffn_hidden;
  const float eps = m->norm_eps;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const Workspace ws = carve(m, max_positions);
  float* x = ws.x;
  float* h = ws.h;
  float* q = ws.qkv;
  float* k = ws.qkv + n_q;
  float* v = ws.qkv + n_q + n_kv;
  float* hidden = ws.ffn;
  float* gate = ws.ffn + ffn;
  Runner runner(threads);

  std::memcpy(x, m->token_embedding + token * d, sizeof(float) * d);
  if (m->embedding_norm_w) norm(x, m->embedding_norm_w, nullptr, d, eps, kRmsNorm, x);
  if (m->position_embedding) {
    for (int64_t i = 0; i < d; ++i) x[i] += m->position_embedding[pos * d + i];
  }

  const int64_t qkv_rows[3] = {n_q, n_kv, n_kv};
  const int64_t d_rows[1] = {d};
  const int64_t ffn_rows[1] = {ffn};
  const int64_t vocab_rows[1] = {m->vocab};
  constexpr int kBlock = Fmt::kBlock;
  for (int64_t layer = 0; layer < m->n_layer; ++layer) {
    const SlLayer& L = m->layers[layer];
    norm(x, L.attn_norm_w, L.attn_norm_b, d, eps, m->norm_kind, h);

    // q, k, v as one phase over the rows of Wq, Wk, Wv.
    const Mat weights[3] = {{L.q_w, L.q_s}, {L.k_w, L.k_s}, {L.v_w, L.v_s}};
    const float* biases[3] = {L.q_b, L.k_b, L.v_b};
    float* outs[3] = {q, k, v};
    const Input h_in = prepare_input<Fmt>(h, d, ws);
    for_rows(runner, qkv_rows, 3, Fmt::row_bytes(d), kBlock,
             [&](int part, int64_t r0, int64_t r1, int) {
               float* out = outs[part];
               const float* bias = biases[part];
               gemv_rows<Fmt>(weights[part], h_in, d, r0, r1,
                              [&](int64_t r, float value) { out[r] = value + bias_at(bias, r); });
             });

    // Attention, one chunk per KV head: QK-norm and RoPE of k, the cache write, then the causal
    // softmax attention of its query heads over positions 0..pos.
    auto attend = [&](int64_t g, int thread) {
      float* scores = ws.scores + thread * ws.scores_stride;
      float* kg = k + g * hd;
      if (L.k_norm_w) norm(kg, L.k_norm_w, nullptr, hd, eps, kRmsNorm, kg);
      if (m->rope_cos) rope(kg, m->rope_cos + pos * hd, m->rope_sin + pos * hd, hd);
      for (int64_t head = g * group; head < (g + 1) * group; ++head) {
        float* qh = q + head * hd;
        if (L.q_norm_w) norm(qh, L.q_norm_w, nullptr, hd, eps, kRmsNorm, qh);
        if (m->rope_cos) rope(qh, m->rope_cos + pos * hd, m->rope_sin + pos * hd, hd);
      }
      const int64_t base = g * m->cache_head_stride;
      float* q_heads = q + g * group * hd;
      float* out_heads = ws.attn + g * group * hd;
      if (m->kv_type == kKvFp16) {
        attend_group<uint16_t>(L.keys, L.values, base, kg, v + g * hd, q_heads, group, pos, hd,
                               scale, scores, out_heads);
      } else {
        attend_group<float>(L.keys, L.values, base, kg, v + g * hd, q_heads, group, pos, hd,
                            scale, scores, out_heads);
      }
    };
    runner.run(m->n_kv_head, attend);

    // x += Wo attn (+ bias), each chunk adding its rows of the output into x.
    const Input attn_in = prepare_input<Fmt>(ws.attn, n_q, ws);
    const Mat o_w{L.o_w, L.o_s};
    for_rows(runner, d_rows, 1, Fmt::row_bytes(n_q), kBlock, [&](int, int64_t r0, int64_t r1, int) {
      gemv_rows<Fmt>(o_w, attn_in, n_q, r0, r1,
                     [&](int64_t r, float value) { x[r] += value + bias_at(L.o_b, r); });
    });

    norm(x, L.mlp_norm_w, L.mlp_norm_b, d, eps, m->norm_kind, h);
    // hidden = act(Wup h), or silu(Wgate h) * Wup h with the gate rows of a chunk computed first.
    const bool swiglu = m->mlp_kind == kSwiGlu;
    const Input mlp_in = prepare_input<Fmt>(h, d, ws);
    const Mat gate_w{L.gate_w, L.gate_s};
    const Mat up_w{L.up_w, L.up_s};
    const int64_t up_bytes = (swiglu ? 2 : 1) * Fmt::row_bytes(d);
    for_rows(runner, ffn_rows, 1, up_bytes, kBlock, [&](int, int64_t r0, int64_t r1, int) {
      if (swiglu) {
        gemv_rows<Fmt>(gate_w, mlp_in, d, r0, r1,
                       [&](int64_t r, float value) { gate[r] = value + bias_at(L.gate_b, r); });
        gemv_rows<Fmt>(up_w, mlp_in, d, r0, r1, [&](int64_t r, float value) {
          hidden[r] = activation(gate[r], kSwiGlu, 0.0f) * (value + bias_at(L.up_b, r));
        });
      } else {
        gemv_rows<Fmt>(up_w, mlp_in, d, r0, r1, [&](int64_t r, float value) {
          hidden[r] = activation(value + bias_at(L.up_b, r), m->mlp_kind, m->leaky_relu_slope);
        });
      }
    });
    const Input hidden_in = prepare_input<Fmt>(hidden, ffn, ws);
    const Mat down_w{L.down_w, L.down_s};
    for_rows(runner, d_rows, 1, Fmt::row_bytes(ffn), kBlock, [&](int, int64_t r0, int64_t r1, int) {
      gemv_rows<Fmt>(down_w, hidden_in, ffn, r0, r1,
                     [&](int64_t r, float value) { x[r] += value + bias_at(L.down_b, r); });
    });
  }

  norm(x, m->final_norm_w, m->final_norm_b, d, eps, m->norm_kind, h);
  const float cap = m->logit_softcap;
  const Input head_in = prepare_input<Fmt>(h, d, ws);
  const Mat head{m->lm_head_w, m->lm_head_s};
  for_rows(runner, vocab_rows, 1, Fmt::row_bytes(d), kBlock, [&](int, int64_t r0, int64_t r1, int) {
    if (cap > 0.0f) {
      gemv_rows<Fmt>(head, head_in, d, r0, r1,
                     [&](int64_t r, float value) { logits[r] = cap * std::tanh(value / cap); });
    } else {
      gemv_rows<Fmt>(head, head_in, d, r0, r1, [&](int64_t r, float value) { logits[r] = value; });
    }
  });
  return 0;
}

// --- many tokens per call: batched decode steps and prefill (sl_forward_tokens) ----------------
//
// n tokens, each with its own cache row and position, go through the model together: every GEMV
// becomes a small GEMM, so each block of weight rows is read from memory once per call and then
// multiplied (from L1) with every token's input. The register tile is kTileRows weight rows x
// tile_tokens<Fmt>() inputs: each loaded weight vector feeds one FMA chain per input, each loaded
// input vector one per row. Attention then runs per (token, KV head): every token's k and v are
// written to its row's cache first (one phase), then each token attends over positions
// 0..position of its own row (the next phase), so T consecutive positions of one row (a prefill, a
// speculative verification) and N rows at one position each (a batch step) are the same call.
// Phases split over the team as sl_decode_step's do (chunks claimed one at a time, no barriers).

constexpr int kTileRows = 4;  // = kQRowGroup: q8/q4 tiles are whole row groups

// Register tiles stay functions of their own. Inlined into forward_tokens (a large function with
// many live values), GCC kept bf16_dot_tile's 16 accumulators in stack slots and stored them every
// iteration: perf put 42% of a 256-token bf16 prefill in those spilled loops.
#define SL_TILE __attribute__((noinline))
constexpr int64_t kPackTokens = 24;  // fp32: inputs per packed block (3 AVX2 vectors)

// Inputs per register tile: as many as the accumulators (kTileRows x tokens), the inputs' vectors
// and a weight vector leave registers for. AVX-512 builds have 32 vector registers: 4 (16
// accumulators). AVX2 has 16: fp32/bf16 3 (12 accumulators, 3 inputs, 1 weight), q8/q4 2 (each
// input's codes and magnitudes stay in registers too).
template <typename Fmt>
constexpr int tile_tokens() {
#if defined(SL_TILE_TOKENS)  // for measurements
  return SL_TILE_TOKENS;
#elif defined(__AVX512F__)
  return 4;
#else
  return Fmt::kIntInput ? 2 : 3;
#endif
}

// How a float-format tile reads its weights: 8 values widened to fp32 (AVX2) and one value.
struct F32Weights {
  using Value = float;
#if defined(__AVX2__)
  static __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
#endif
  static float scalar(float v) { return v; }
};
struct BF16Weights {
  using Value = uint16_t;
#if defined(__AVX2__)
  static __m256 load8(const uint16_t* p) { return load_bf16(p); }
#endif
  static float scalar(uint16_t v) { return bf16_to_fp32(v); }
};

// out[i * T + t] = dot(row r + i of W, input t) for i < R, t < T; fp32 or bf16 weights (`Load`).
template <int R, int T, typename Load>
SL_TILE void float_tile(const Mat& W, int64_t r, int64_t K, const Input* in, float* out) {
  const typename Load::Value* w = static_cast<const typename Load::Value*>(W.w) + r * K;
  int64_t k = 0;
#if defined(__AVX2__)
  __m256 acc[R][T];
  for (int i = 0; i < R; ++i) {
    for (int t = 0; t < T; ++t) acc[i][t] = _mm256_setzero_ps();
  }
  for (; k + 8 <= K; k += 8) {
    __m256 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_ps(in[t].x + k);
    for (int i = 0; i < R; ++i) {
      const __m256 wv = Load::load8(w + i * K + k);
      for (int t = 0; t < T; ++t) acc[i][t] = _mm256_fmadd_ps(wv, xv[t], acc[i][t]);
    }
  }
  for (int i = 0; i < R; ++i) {
    for (int t = 0; t < T; ++t) out[i * T + t] = hsum256(acc[i][t]);
  }
#else
  for (int i = 0; i < R * T; ++i) out[i] = 0.0f;
#endif
  for (int i = 0; i < R; ++i) {
    for (int t = 0; t < T; ++t) {
      for (int64_t j = k; j < K; ++j) out[i * T + t] += Load::scalar(w[i * K + j]) * in[t].x[j];
    }
  }
}

#if defined(__AVX512BF16__) && defined(__AVX512VL__)
#define SL_BF16_DOT 1
// bf16 weights against bf16 inputs with AVX512-BF16's vdpbf16ps: each instruction takes 32
// weight/input pairs and adds them into 16 fp32 sums, where the fp32 tile widens 8 weights and
// makes 8 FMAs: 1.5x the tokens/s of a 32-row step (llama-42m, 2 threads). The products are exact
// in fp32 either way (bf16 inputs, as every bf16 GEMV's), so only the summation order differs.
template <int R, int T>
SL_TILE void bf16_dot_tile(const Mat& W, int64_t r, int64_t K, const Input* in, float* out) {
  const uint16_t* w = static_cast<const uint16_t*>(W.w) + r * K;
  __m512 acc[R][T];
  for (int i = 0; i < R; ++i) {
    for (int t = 0; t < T; ++t) acc[i][t] = _mm512_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512bh xv[T];
    for (int t = 0; t < T; ++t) xv[t] = (__m512bh)_mm512_loadu_si512(in[t].xb + k);
    for (int i = 0; i < R; ++i) {
      const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + i * K + k);
      for (int t = 0; t < T; ++t) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], wv, xv[t]);
    }
  }
  for (int i = 0; i < R; ++i) {
    for (int t = 0; t < T; ++t) {
      float sum = _mm512_reduce_add_ps(acc[i][t]);
      for (int64_t j = k; j < K; ++j) sum += bf16_to_fp32(w[i * K + j]) * bf16_to_fp32(in[t].xb[j]);
      out[i * T + t] = sum;
    }
  }
}

// x (K), already at bf16 precision (round_to_bf16_precision), as bf16 values in xb: exact.
inline void to_bf16(const float* x, int64_t K, uint16_t* xb) {
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512bh pair = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k));
    _mm512_storeu_si512(xb + k, (__m512i)pair);
  }
  for (; k < K; ++k) {
    uint32_t bits;
    std::memcpy(&bits, x + k, 4);
    xb[k] = static_cast<uint16_t>(bits >> 16);
  }
}

// bf16 GEMM tiles with the rows in the lanes (as the q8/q4 lane tiles): a panel's rows are first
// rearranged, 16 at a time, into vectors that hold the weight pair (k, k + 1) of each of the 16
// rows, and each input's pair is broadcast to all 16 lanes, so one vdpbf16ps adds two products
// to each of 16 rows' sums. bf16_dot_tile sums 32 products of one row and one input into 16
// lanes instead, and for K = 512 (16 steps) its start and its horizontal sums took a fifth of
// its time. Here the sums stay in their lanes over all of K and come out as 16 consecutive rows
// of one token (its outputs are token-major).
constexpr int64_t kBf16LaneRows = 16;
constexpr int kBf16LaneGroups = 4;  // row groups per tile: 64 rows
// Inputs per tile of G groups: G x T accumulators, G weight vectors and a broadcast in the 32
// registers (G = 4: 29). Per weight pair a tile loads G vectors and broadcasts T inputs for G x T
// vdpbf16ps; the last panel of a chunk may have fewer groups, and takes more inputs at a time.
constexpr int bf16_lane_tokens(int groups) { return groups >= 4 ? 6 : groups == 3 ? 8 : 12; }
// Fewer inputs keep bf16_dot_tile: the rearranging pass reads every weight of the step once more.
// Kernel batch steps of llama-42m (2 threads, ms, lanes against dot tiles, three runs): 4 rows
// 7.1-7.8 against 5.2-6.4, 8 rows 8.3-8.6 against 6.6-8.4, 12 rows 9.0-9.8 against 9.5-9.6,
// 16 rows 11.5-11.6 against 11.4-11.7; 32 rows (whole server steps) 23.9-25.4 against 25.3-28.6.
constexpr int64_t kBf16LaneMinTokens = 16;

// Rows [r0, r1) of W (bf16, N x K) as (groups, pairs, 16) 32-bit words: word (g, p, i) holds
// weights 2p and 2p + 1 of row r0 + 16 g + i (low half: 2p). Rows past r1, and the high half
// past an odd K, are zeros.
inline void rearrange_bf16_rows(const Mat& W, int64_t K, int64_t r0, int64_t r1, uint32_t* out) {
  const int64_t pairs = (K + 1) / 2;
  const int64_t groups = (r1 - r0 + kBf16LaneRows - 1) / kBf16LaneRows;
  const uint16_t* w = static_cast<const uint16_t*>(W.w);
  for (int64_t g = 0; g < groups; ++g) {
    uint32_t* group = out + g * pairs * kBf16LaneRows;
    const int64_t first = r0 + g * kBf16LaneRows;
    const int64_t valid = r1 - first < kBf16LaneRows ? r1 - first : kBf16LaneRows;
    int64_t p = 0;
    if (valid == kBf16LaneRows && K % 2 == 0) {
      // 16 x 16 blocks of words transposed in registers: row i's words p..p+15 in, then pair
      // p + c of the 16 rows out (the 4-stage AVX-512 transpose).
      for (; p + 16 <= pairs; p += 16) {
        __m512i r[16];
        for (int i = 0; i < 16; ++i) {
          r[i] = _mm512_loadu_si512(w + (first + i) * K + 2 * p);
        }
        transpose16_words(r, group + p * kBf16LaneRows);
      }
    }
    for (; p < pairs; ++p) {
      for (int64_t i = 0; i < kBf16LaneRows; ++i) {
        uint32_t word = 0;
        if (i < valid) {
          const uint16_t* row = w + (first + i) * K;
          word = row[2 * p];
          if (2 * p + 1 < K) word |= static_cast<uint32_t>(row[2 * p + 1]) << 16;
        }
        group[p * kBf16LaneRows + i] = word;
      }
    }
  }
}

// out[t * G * 16 + 16 g + i] = dot(row 16 g + i of the rearranged groups, input t), for G groups
// and T inputs (bf16 copies, xb; an odd K's copy has a zero after its last value).
template <int G, int T>
SL_TILE void bf16_lane_tile(const uint32_t* groups, int64_t pairs, const Input* in, float* out) {
  __m512 acc[G][T];
  for (int g = 0; g < G; ++g) {
    for (int t = 0; t < T; ++t) acc[g][t] = _mm512_setzero_ps();
  }
  const uint32_t* x[T];
  for (int t = 0; t < T; ++t) x[t] = reinterpret_cast<const uint32_t*>(in[t].xb);
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh w[G];
    for (int g = 0; g < G; ++g) {
      w[g] = (__m512bh)_mm512_loadu_si512(groups + (g * pairs + p) * kBf16LaneRows);
    }
    for (int t = 0; t < T; ++t) {
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(static_cast<int>(x[t][p]));
      for (int g = 0; g < G; ++g) acc[g][t] = _mm512_dpbf16_ps(acc[g][t], w[g], xv);
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int g = 0; g < G; ++g) _mm512_storeu_ps(out + (t * G + g) * kBf16LaneRows, acc[g][t]);
  }
}

// bf16_lane_tile<G, tokens> for 1 <= tokens <= T.
template <int G, int T = bf16_lane_tokens(G)>
inline void bf16_lane_tile_tokens(const uint32_t* groups, int64_t pairs, const Input* in,
                                  int tokens, float* out) {
  if constexpr (T > 1) {
    if (tokens < T) {
      bf16_lane_tile_tokens<G, T - 1>(groups, pairs, in, tokens, out);
      return;
    }
  }
  bf16_lane_tile<G, T>(groups, pairs, in, out);
}

// gemm_rows for bf16 weights with the lane tiles: per panel of kBf16LaneGroups x 16 rows, the
// rows rearranged once into a per-thread buffer, then every input passes over it,
// bf16_lane_tokens(groups) at a time; the outputs go token by token, the panel's rows in order.
template <typename Epilogue>
inline void gemm_rows_bf16_lanes(const Mat& W, const Input* in, int64_t n, int64_t K, int64_t r0,
                                 int64_t r1, Epilogue& epilogue) {
  constexpr int64_t kPanel = kBf16LaneGroups * kBf16LaneRows;
  const int64_t pairs = (K + 1) / 2;
  thread_local std::vector<uint32_t> buffer;
  buffer.resize(static_cast<size_t>(kPanel * pairs));
  float out[kPanel * bf16_lane_tokens(kBf16LaneGroups)];  // the largest tile (G = 4) or more
  static_assert(bf16_lane_tokens(2) * 2 <= bf16_lane_tokens(4) * 4, "out holds every tile");
  for (int64_t p0 = r0; p0 < r1; p0 += kPanel) {
    const int64_t p1 = p0 + kPanel < r1 ? p0 + kPanel : r1;
    const int groups = static_cast<int>((p1 - p0 + kBf16LaneRows - 1) / kBf16LaneRows);
    const int64_t per_tile = bf16_lane_tokens(groups);
    rearrange_bf16_rows(W, K, p0, p1, buffer.data());
    for (int64_t t = 0; t < n; t += per_tile) {
      const int tokens = static_cast<int>(n - t < per_tile ? n - t : per_tile);
      static_assert(kBf16LaneGroups == 4, "one case per group count");
      switch (groups) {
        case 4: bf16_lane_tile_tokens<4>(buffer.data(), pairs, in + t, tokens, out); break;
        case 3: bf16_lane_tile_tokens<3>(buffer.data(), pairs, in + t, tokens, out); break;
        case 2: bf16_lane_tile_tokens<2>(buffer.data(), pairs, in + t, tokens, out); break;
        default: bf16_lane_tile_tokens<1>(buffer.data(), pairs, in + t, tokens, out); break;
      }
      const int64_t width = groups * kBf16LaneRows;  // the tile's rows per token in `out`
      for (int j = 0; j < tokens; ++j) {
        for (int64_t r = p0; r < p1; ++r) epilogue(r, t + j, out[j * width + (r - p0)]);
      }
    }
  }
}
#endif

// The same for q8/q4 weights (R = one row group) against T int8-quantized inputs: per block, each
// row's weights are loaded (q4: unpacked) once and dotted with every input's block; the integer
// dot of 32 products is scaled by d_w * d_x into an fp32 accumulator, as QFormat::rows.
template <int32_t kType, int R, int T>
SL_TILE void q_tile(const Mat& W, int64_t r, int64_t K, const Input* in, float* out) {
  static_assert(R == kQRowGroup, "q8/q4 tiles are whole row groups");
  constexpr int64_t kBlockBytes = kType == kQ8 ? kQBlock : kQBlock / 2;
  const int64_t blocks = q_blocks(K);
  const uint8_t* w = static_cast<const uint8_t*>(W.w) + r * blocks * kBlockBytes;
  const uint16_t* s = W.s + r * blocks;
  float offset[R][T];  // q4: sum over blocks of d_w d_x sum(x codes), times -8 at the end
  for (int i = 0; i < R; ++i) {
    for (int t = 0; t < T; ++t) offset[i][t] = 0.0f;
  }
#if SL_Q_SIMD
  __m256 acc[R][T];
  __m256 offsets[R][T];  // q4: the same offsets, 8 blocks per lane
  for (int i = 0; i < R; ++i) {
    for (int t = 0; t < T; ++t) acc[i][t] = offsets[i][t] = _mm256_setzero_ps();
  }
  // The 32-product dot of block b of row i with input t, scaled into acc[i][t].
  auto block = [&](int64_t b, const __m256i* x, const __m256i* magnitude, int i, int t,
                   float combined) {
    const uint8_t* p = w + (b * R + i) * kBlockBytes;
    __m256i dot;
    if constexpr (kType == kQ8) {
      dot = dot_u8_i8(magnitude[t], _mm256_sign_epi8(load_bytes(p), x[t]));
    } else {
      dot = dot_u8_i8(unpack_q4(p), x[t]);
    }
    acc[i][t] = _mm256_fmadd_ps(_mm256_set1_ps(combined), _mm256_cvtepi32_ps(dot), acc[i][t]);
  };
  int64_t b = 0;
  // 8 blocks at a time: the 8 fp16 weight scales of each row converted at once and multiplied by
  // each input's 8 scales (d_w d_x for every row, input and block of the 8).
  alignas(32) float scale[R][T][8];
  for (; b + 8 <= blocks; b += 8) {
    const char* ahead = reinterpret_cast<const char*>(w + b * R * kBlockBytes) + 1024;
    for (int64_t line = 0; line < 8 * R * kBlockBytes; line += 64) {
      _mm_prefetch(ahead + line, _MM_HINT_T0);  // 1 KB ahead in the group's stream, as rows()
    }
    for (int i = 0; i < R; ++i) {
      const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i * blocks + b));
      const __m256 dw = _mm256_cvtph_ps(half);
      for (int t = 0; t < T; ++t) {
        const __m256 combined = _mm256_mul_ps(dw, _mm256_loadu_ps(in[t].d + b));
        _mm256_store_ps(scale[i][t], combined);
        if constexpr (kType == kQ4) {
          offsets[i][t] = _mm256_fmadd_ps(combined, _mm256_loadu_ps(in[t].sums + b), offsets[i][t]);
        }
      }
    }
    for (int j = 0; j < 8; ++j) {
      __m256i x[T];
      __m256i magnitude[T];
      for (int t = 0; t < T; ++t) {
        x[t] = load_bytes(in[t].q + (b + j) * kQBlock);
        if constexpr (kType == kQ8) magnitude[t] = _mm256_sign_epi8(x[t], x[t]);
      }
      for (int i = 0; i < R; ++i) {
        if constexpr (kType == kQ8) {
          for (int t = 0; t < T; ++t) block(b + j, x, magnitude, i, t, scale[i][t][j]);
        } else {
          // q4: unpack the row's block once for all inputs.
          const __m256i codes = unpack_q4(w + ((b + j) * R + i) * kBlockBytes);
          for (int t = 0; t < T; ++t) {
            const __m256 dot = _mm256_cvtepi32_ps(dot_u8_i8(codes, x[t]));
            acc[i][t] = _mm256_fmadd_ps(_mm256_broadcast_ss(&scale[i][t][j]), dot, acc[i][t]);
          }
        }
      }
    }
  }
  for (; b < blocks; ++b) {  // the last blocks (fewer than 8)
    __m256i x[T];
    __m256i magnitude[T];
    for (int t = 0; t < T; ++t) {
      x[t] = load_bytes(in[t].q + b * kQBlock);
      if constexpr (kType == kQ8) magnitude[t] = _mm256_sign_epi8(x[t], x[t]);
    }
    for (int i = 0; i < R; ++i) {
      const float dw = fp16_to_fp32(s[i * blocks + b]);
      for (int t = 0; t < T; ++t) {
        const float combined = dw * in[t].d[b];
        block(b, x, magnitude, i, t, combined);
        if constexpr (kType == kQ4) offset[i][t] += combined * in[t].sums[b];
      }
    }
  }
  for (int i = 0; i < R; ++i) {
    for (int t = 0; t < T; ++t) {
      out[i * T + t] = hsum256(acc[i][t]) - 8.0f * (hsum256(offsets[i][t]) + offset[i][t]);
    }
  }
#else
  for (int i = 0; i < R; ++i) {
    for (int t = 0; t < T; ++t) {
      float sum = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* block = w + (b * R + i) * kBlockBytes;
        const int32_t total = q_block_dot<kType>(block, in[t].q + b * kQBlock);
        sum += fp16_to_fp32(s[i * blocks + b]) * in[t].d[b] * static_cast<float>(total);
      }
      out[i * T + t] = sum + offset[i][t];
    }
  }
#endif
}

#if SL_Q_SIMD && defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX512F__)
#define SL_Q_LANES 1
// q8/q4 GEMM tiles with one row per pair of lanes (the idea of llama.cpp's repacked Q4_0 GEMM):
// q_tile's vpdpbusd sums 32 products of one row and one input into 8 lanes, so every block of
// every (row, input) pair pays an int-to-float conversion and a scale FMA of its own. Here a
// pair of row groups' block is first rearranged (once per panel, for all the inputs) into 4
// AVX-512 vectors W_c = [row 0 bytes 8c..8c+7 | row 1 bytes 8c..8c+7 | ... | row 7 ..], c = 0..3,
// with the weights as unsigned bytes (q8: w + 128; q4: its stored code + 8), and the input's 8
// bytes 8c.. are broadcast to every lane pair: after 4 vpdpbusd lanes 2i and 2i + 1 hold row i's
// block dot, so one conversion and one FMA serve 8 rows (4 rows per 256-bit vector measured
// 13.3-14.7 ms against 11.3-12.8 for a 32-row q8 step). The unsigned offset comes off at the
// end: sum (u - o) x = sum u x - o sum x (o = 128 or 8), with the input's block sums.
// Needs VNNI: without it maddubs' int16 pair sums would overflow for q8's unsigned weights.
constexpr int kLaneTokens = 4;
// Fewer inputs keep q_tile: the rearranging pass costs about what a few inputs' dots do. A step
// of 4 rows took 4.1 ms against q_tile's 2.6-3.0 (llama-42m q4, 2 threads), 8 rows the same
// (5.8 against 5.5-5.8 ms), 16 rows 9.9-10.8 against 11.9-12.2, 32 rows 11.2-11.6 against
// 13.8-17.1 (q8: 9.6-11.5 against 16.2-21.7).
constexpr int64_t kLaneMinTokens = 8;

// Rearranges the row groups of rows [r0, r1) (whole groups) two at a time: for each pair of
// groups and block, 4 vectors of 64 bytes, W_c of the first group then W_c of the second, into
// `bytes` (pairs, blocks, 4, 64), and the scales into `scales` (pairs, blocks, 16 floats: each
// row's d_w twice, matching the lane pairs). A last unpaired group leaves its partner zero.
template <int32_t kType>
inline void rearrange_groups(const Mat& W, int64_t K, int64_t r0, int64_t r1, uint8_t* bytes,
                             float* scales) {
  constexpr int64_t kBlockBytes = kType == kQ8 ? kQBlock : kQBlock / 2;
  const int64_t blocks = q_blocks(K);
  const __m256i duplicate = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  const int64_t groups = (r1 - r0 + kQRowGroup - 1) / kQRowGroup;
  if (groups % 2 == 1) {  // the missing partner of the last group: zeros
    const int64_t pair = groups / 2;
    for (int64_t b = 0; b < blocks; ++b) {
      for (int c = 0; c < 4; ++c) {
        std::memset(bytes + ((pair * blocks + b) * 4 + c) * 64 + 32, 0, 32);
      }
      std::memset(scales + (pair * blocks + b) * 16 + 8, 0, 8 * sizeof(float));
    }
  }
  for (int64_t group = 0; group < groups; ++group) {
    const int64_t r = r0 + group * kQRowGroup;
    const int64_t pair = group / 2, half = group % 2;
    const uint8_t* w = static_cast<const uint8_t*>(W.w) + r * blocks * kBlockBytes;
    for (int64_t b = 0; b < blocks; ++b) {
      __m256i row[4];
      for (int i = 0; i < 4; ++i) {
        const uint8_t* p = w + (b * kQRowGroup + i) * kBlockBytes;
        if constexpr (kType == kQ8) {
          row[i] = _mm256_xor_si256(load_bytes(p), _mm256_set1_epi8(static_cast<char>(0x80)));
        } else {
          row[i] = unpack_q4(p);
        }
      }
      // A 4 x 4 transpose of 8-byte pieces: W_c takes piece c of every row.
      const __m256i t0 = _mm256_unpacklo_epi64(row[0], row[1]);  // r0c0 r1c0 | r0c2 r1c2
      const __m256i t1 = _mm256_unpackhi_epi64(row[0], row[1]);  // r0c1 r1c1 | r0c3 r1c3
      const __m256i t2 = _mm256_unpacklo_epi64(row[2], row[3]);
      const __m256i t3 = _mm256_unpackhi_epi64(row[2], row[3]);
      uint8_t* out = bytes + (pair * blocks + b) * 4 * 64 + half * 32;
      const __m256i pieces[4] = {
          _mm256_permute2x128_si256(t0, t2, 0x20), _mm256_permute2x128_si256(t1, t3, 0x20),
          _mm256_permute2x128_si256(t0, t2, 0x31), _mm256_permute2x128_si256(t1, t3, 0x31)};
      for (int c = 0; c < 4; ++c) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c * 64), pieces[c]);
      }
      // The 4 fp16 scales gathered in a register: through a small array in memory, the vector
      // load waited on 4 narrow stores (a failed store forward) and took 60% of this function.
      uint64_t half_scales = 0;
      for (int i = 0; i < 4; ++i) {
        half_scales |= static_cast<uint64_t>(W.s[(r + i) * blocks + b]) << (16 * i);
      }
      const __m256 d = _mm256_castps128_ps256(
          _mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<long long>(half_scales))));
      _mm256_storeu_ps(scales + (pair * blocks + b) * 16 + half * 8,
                       _mm256_permutevar8x32_ps(d, duplicate));
    }
  }
}

// out[i * T + t] = dot(row i of the rearranged pair of groups, input t), 8 rows and T inputs.
template <int32_t kType, int T>
SL_TILE void q_lane_tile(const uint8_t* bytes, const float* scales, int64_t blocks,
                        const Input* in, float* out) {
  constexpr float kOffset = kType == kQ8 ? 128.0f : 8.0f;
  __m512 acc[T];
  __m512 offsets[T];
  for (int t = 0; t < T; ++t) acc[t] = offsets[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* w = bytes + b * 4 * 64;
    const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);
    const __m512i w2 = _mm512_loadu_si512(w + 128), w3 = _mm512_loadu_si512(w + 192);
    const __m512 dw = _mm512_loadu_ps(scales + b * 16);
    for (int t = 0; t < T; ++t) {
      const int8_t* x = in[t].q + b * kQBlock;
      int64_t piece[4];
      std::memcpy(piece, x, sizeof(piece));
      __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w0, _mm512_set1_epi64(piece[0]));
      dot = _mm512_dpbusd_epi32(dot, w1, _mm512_set1_epi64(piece[1]));
      dot = _mm512_dpbusd_epi32(dot, w2, _mm512_set1_epi64(piece[2]));
      dot = _mm512_dpbusd_epi32(dot, w3, _mm512_set1_epi64(piece[3]));
      const __m512 combined = _mm512_mul_ps(dw, _mm512_set1_ps(in[t].d[b]));  // d_w d_x per lane
      acc[t] = _mm512_fmadd_ps(combined, _mm512_cvtepi32_ps(dot), acc[t]);
      offsets[t] = _mm512_fmadd_ps(combined, _mm512_set1_ps(in[t].sums[b]), offsets[t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    // Lane pairs to rows: (acc - o/2 * offsets) summed over each pair (each lane of a pair has
    // the row's whole offset term, so half of it from each).
    const __m512 v = _mm512_fnmadd_ps(_mm512_set1_ps(kOffset * 0.5f), offsets[t], acc[t]);
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, v);
    for (int i = 0; i < 8; ++i) out[i * T + t] = lanes[2 * i] + lanes[2 * i + 1];
  }
}

// gemm_rows for q8/q4 with the lane tiles: per panel, its groups rearranged once into a
// per-thread buffer, then every input passes over it, kLaneTokens at a time, 8 rows per tile.
template <int32_t kType, typename Epilogue>
inline void gemm_rows_lanes(const Mat& W, const Input* in, int64_t n, int64_t K, int64_t r0,
                            int64_t r1, int64_t panel, Epilogue& epilogue) {
  const int64_t blocks = q_blocks(K);
  panel = (panel + 2 * kQRowGroup - 1) / (2 * kQRowGroup) * (2 * kQRowGroup);  // whole pairs
  thread_local std::vector<uint8_t> bytes;
  thread_local std::vector<float> scales;
  const size_t pairs = static_cast<size_t>(panel / (2 * kQRowGroup));
  bytes.resize(pairs * static_cast<size_t>(blocks * 4 * 64));
  scales.resize(pairs * static_cast<size_t>(blocks * 16));
  for (int64_t p0 = r0; p0 < r1; p0 += panel) {
    const int64_t p1 = p0 + panel < r1 ? p0 + panel : r1;
    rearrange_groups<kType>(W, K, p0, p1, bytes.data(), scales.data());
    for (int64_t t = 0; t < n; t += kLaneTokens) {
      const int tokens = static_cast<int>(n - t < kLaneTokens ? n - t : kLaneTokens);
      for (int64_t r = p0; r < p1; r += 2 * kQRowGroup) {
        const int64_t pair = (r - p0) / (2 * kQRowGroup);
        const uint8_t* pair_bytes = bytes.data() + pair * blocks * 4 * 64;
        const float* pair_scales = scales.data() + pair * blocks * 16;
        float out[2 * kQRowGroup * kLaneTokens];
        switch (tokens) {
          case 4: q_lane_tile<kType, 4>(pair_bytes, pair_scales, blocks, in + t, out); break;
          case 3: q_lane_tile<kType, 3>(pair_bytes, pair_scales, blocks, in + t, out); break;
          case 2: q_lane_tile<kType, 2>(pair_bytes, pair_scales, blocks, in + t, out); break;
          default: q_lane_tile<kType, 1>(pair_bytes, pair_scales, blocks, in + t, out); break;
        }
        for (int i = 0; i < 2 * kQRowGroup && i < p1 - r; ++i) {
          for (int j = 0; j < tokens; ++j) epilogue(r + i, t + j, out[i * tokens + j]);
        }
      }
    }
  }
}
#endif

// The tile of a format (Fmt: F32Format, Bf16Format, QFormat<kQ8>, QFormat<kQ4>).
template <typename Fmt, int R, int T>
inline void format_tile(const Mat& W, int64_t r, int64_t K, const Input* in, float* out) {
  if constexpr (std::is_same_v<Fmt, F32Format>) {
    float_tile<R, T, F32Weights>(W, r, K, in, out);
  } else if constexpr (std::is_same_v<Fmt, Bf16Format>) {
#if SL_BF16_DOT
    bf16_dot_tile<R, T>(W, r, K, in, out);
#else
    float_tile<R, T, BF16Weights>(W, r, K, in, out);
#endif
  } else if constexpr (std::is_same_v<Fmt, QFormat<kQ8>>) {
    q_tile<kQ8, R, T>(W, r, K, in, out);
  } else {
    static_assert(std::is_same_v<Fmt, QFormat<kQ4>>, "unknown format");
    q_tile<kQ4, R, T>(W, r, K, in, out);
  }
}

// fp32 weights go another way (a dot per row and input ends in a horizontal sum per pair, and
// held each weight and input vector in a register only when 19 fit in 16): the inputs are packed
// k-major, kPackTokens tokens side by side, and each weight value is broadcast against 3 vectors
// of 8 inputs (an outer product, as BLAS micro-kernels do): per k, 3 input loads and 4 broadcasts
// feed 12 FMAs into 12 accumulators, no horizontal sums.
// A block narrower than kPackTokens (pack_block spreads a call's vectors over its blocks)
// takes V = 1 or 2 vectors of 8 inputs: per k, V input loads and R broadcasts feed R x V FMAs.
template <int R, int V = 3>
inline void f32_outer(const float* w, int64_t K, int64_t k0, int64_t k1, const float* packed,
                      bool accumulate, float* out) {
  static_assert(V >= 1 && V <= 3, "1 to 3 vectors of 8 inputs");
#if defined(__AVX2__)
  __m256 acc[R][V];
  for (int i = 0; i < R; ++i) {
    for (int v = 0; v < V; ++v) {
      acc[i][v] = accumulate ? _mm256_loadu_ps(out + i * kPackTokens + 8 * v) : _mm256_setzero_ps();
    }
  }
  for (int64_t k = k0; k < k1; ++k) {
    const float* xk = packed + k * kPackTokens;
    __m256 x[V];
    for (int v = 0; v < V; ++v) x[v] = _mm256_loadu_ps(xk + 8 * v);
    // Keep the input vectors in registers: without this GCC reloads them as memory operands of
    // each FMA (16 loads per 12 FMAs instead of 7), which made it load-bound.
    if constexpr (V == 3) {
      __asm__("" : "+x"(x[0]), "+x"(x[1]), "+x"(x[2]));
    } else if constexpr (V == 2) {
      __asm__("" : "+x"(x[0]), "+x"(x[1]));
    } else {
      __asm__("" : "+x"(x[0]));
    }
    for (int i = 0; i < R; ++i) {
      const __m256 wv = _mm256_broadcast_ss(w + i * K + k);
      for (int v = 0; v < V; ++v) acc[i][v] = _mm256_fmadd_ps(wv, x[v], acc[i][v]);
    }
  }
  for (int i = 0; i < R; ++i) {
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(out + i * kPackTokens + 8 * v, acc[i][v]);
  }
#else
  for (int i = 0; i < R; ++i) {
    for (int j = 0; j < 8 * V; ++j) {
      float sum = accumulate ? out[i * kPackTokens + j] : 0.0f;
      for (int64_t k = k0; k < k1; ++k) sum += w[i * K + k] * packed[k * kPackTokens + j];
      out[i * kPackTokens + j] = sum;
    }
  }
#endif
}

// One register tile: R rows from r against the `tokens` (1..tile_tokens<Fmt>()) inputs from t;
// epilogue(row, token, value) for the first valid_rows rows.
template <typename Fmt, int R, typename Epilogue>
inline void run_tile(const Mat& W, int64_t r, int64_t K, const Input* in, int64_t t, int tokens,
                     int64_t valid_rows, Epilogue& epilogue) {
  constexpr int kTokens = tile_tokens<Fmt>();
  static_assert(kTokens >= 1 && kTokens <= 4, "tiles of 1 to 4 inputs");
  float out[R * kTokens];
  if (tokens == kTokens) {
    format_tile<Fmt, R, kTokens>(W, r, K, in + t, out);
  } else if (tokens == 1) {
    format_tile<Fmt, R, 1>(W, r, K, in + t, out);
  } else if (tokens == 2) {
    if constexpr (kTokens > 2) format_tile<Fmt, R, 2>(W, r, K, in + t, out);
  } else {
    if constexpr (kTokens > 3) format_tile<Fmt, R, 3>(W, r, K, in + t, out);
  }
  for (int i = 0; i < R && i < valid_rows; ++i) {
    for (int j = 0; j < tokens; ++j) epilogue(r + i, t + j, out[i * tokens + j]);
  }
}

// Tokens the fp32 outer-product tiles take of n: blocks of kPackTokens, the last one narrower
// (whole vectors of 8 inputs), padded with zeros only when more than kPackRemainderMax of its 8
// are real; the tokens left over go through the dot tiles, panel by panel. Fewer than 8 keep the
// dot tiles (a padded vector would multiply the work of a small batch step). Padding 8 tokens to
// 24 (a 32-row batch step) once spent a third of the step's multiply-adds on zeros; a dot-tile
// token costs about 1.8 padded ones (llama-42m, 2 threads).
constexpr int64_t kPackVector = 8;
constexpr int64_t kPackRemainderMax = 4;
inline int64_t packed_token_count(int64_t n) {
  if (n < kPackVector) return 0;
  const int64_t rest = n % kPackVector;
  return n - rest + (rest > kPackRemainderMax ? kPackVector : 0);
}

// The packed tokens go in as few blocks as hold them (at most kPackTokens each), their vectors of
// 8 spread evenly: 32 tokens as 16 + 16, not 24 + 8. A block of one vector has 8 rows per tile
// and per k loads 8 broadcasts for 8 FMAs, where 2 vectors load 6 for 8 and 3 load 7 for 12.
// Block b sits at packed + b * K * kPackTokens, (K, kPackTokens) whatever its width.
struct PackBlock {
  int64_t start;  // its first token
  int64_t width;  // tokens, a multiple of kPackVector
};
inline int64_t pack_block_count(int64_t packed_tokens) {
  return (packed_tokens + kPackTokens - 1) / kPackTokens;
}
inline PackBlock pack_block(int64_t packed_tokens, int64_t block) {
  const int64_t vectors = packed_tokens / kPackVector;
  const int64_t blocks = pack_block_count(packed_tokens);
  const int64_t base = vectors / blocks, extra = vectors % blocks;
  const int64_t first_vector = block * base + (block < extra ? block : extra);
  return {first_vector * kPackVector, (base + (block < extra ? 1 : 0)) * kPackVector};
}

// Asks for rows [q0, q1), columns [k0, k1) of W (N, K) fp32 to be brought into L2, a cache line at
// a time. The fp32 GEMM calls it for the next panel while it multiplies this one: with 8-32 inputs
// the weights' trip from memory and the multiply-adds take comparable times and otherwise run one
// after the other. Kernel batch steps with / without it, alternating step by step in one process
// (60-80 pairs, median ratio; 2 threads, 2026-12-04): akane-124m at 8 / 16 / 32 rows 0.95 / 0.94 /
// 0.96, llama-42m at 8 / 32 rows 0.87 / 0.92; prefills of 32 tokens 1.00 (akane-124m) and 0.95
// (llama-42m), of 256 tokens 0.98. Into L1 instead (prefetcht0), a 32-token prefill was 7-13%
// slower; the GEMV (one input), the dot tiles (fewer than 8 inputs) and the bf16 tiles gained
// nothing from it.
inline void prefetch_slice_to_l2(const float* w, int64_t K, int64_t q0, int64_t q1, int64_t k0,
                                 int64_t k1) {
  constexpr int64_t kLineFloats = 16;  // 64-byte cache lines
  for (int64_t q = q0; q < q1; ++q) {
    for (int64_t k = k0; k < k1; k += kLineFloats) __builtin_prefetch(w + q * K + k, 0, 2);
  }
}

// gemm_rows for fp32 weights on packed inputs: panels of rows (~16 KB of weights, read from
// memory once), then per block of kPackTokens inputs, K in slices of 128 (the slice of the packed
// block, 12 KB, stays in L1 while the panel's rows pass over it) accumulated in `tile`; then the
// tokens left out of the packed blocks, with the dot tiles while the panel is still in cache.
template <typename Epilogue>
inline void gemm_rows_packed(const Mat& W, const Input* in, int64_t n, int64_t K, int64_t r0,
                             int64_t r1, Epilogue& epilogue) {
  constexpr int64_t kPanel = 16;  // rows (a multiple of kTileRows)
  constexpr int64_t kSlice = 128;
  constexpr int kTokens = tile_tokens<F32Format>();
  const float* packed = in[0].packed;
  const int64_t packed_tokens = packed_token_count(n);
  const float* w = static_cast<const float*>(W.w);
  float tile[kPanel * kPackTokens];
  for (int64_t p0 = r0; p0 < r1; p0 += kPanel) {
    const int64_t p1 = p0 + kPanel < r1 ? p0 + kPanel : r1;
    for (int64_t b = 0; b < pack_block_count(packed_tokens); ++b) {
      const float* block = packed + b * K * kPackTokens;  // (K, kPackTokens)
      const auto [t0, width] = pack_block(packed_tokens, b);
      for (int64_t k0 = 0; k0 < K; k0 += kSlice) {
        const int64_t k1 = k0 + kSlice < K ? k0 + kSlice : K;
        if (b == 0) prefetch_slice_to_l2(w, K, p1, p1 + kPanel < r1 ? p1 + kPanel : r1, k0, k1);
        int64_t r = p0;
        if (width == kPackTokens) {
          for (; r + kTileRows <= p1; r += kTileRows) {
            f32_outer<kTileRows>(w + r * K, K, k0, k1, block, k0 > 0,
                                 tile + (r - p0) * kPackTokens);
          }
        } else if (width == 2 * kPackVector) {
          for (; r + kTileRows <= p1; r += kTileRows) {
            f32_outer<kTileRows, 2>(w + r * K, K, k0, k1, block, k0 > 0,
                                    tile + (r - p0) * kPackTokens);
          }
        } else {
          // One vector of inputs: 8 rows at a time keep 8 FMA chains in flight.
          for (; r + 2 * kTileRows <= p1; r += 2 * kTileRows) {
            f32_outer<2 * kTileRows, 1>(w + r * K, K, k0, k1, block, k0 > 0,
                                        tile + (r - p0) * kPackTokens);
          }
        }
        for (; r < p1; ++r) {
          float* row_tile = tile + (r - p0) * kPackTokens;
          if (width == kPackTokens) {
            f32_outer<1>(w + r * K, K, k0, k1, block, k0 > 0, row_tile);
          } else if (width == 2 * kPackVector) {
            f32_outer<1, 2>(w + r * K, K, k0, k1, block, k0 > 0, row_tile);
          } else {
            f32_outer<1, 1>(w + r * K, K, k0, k1, block, k0 > 0, row_tile);
          }
        }
      }
      // Token by token, the panel's rows in order: the outputs are token-major (out[t][r]), so
      // each token's row of 16 values is written in one go. Row by row, the stores stepped
      // through a line per token; at strides of 2 KB (d = 512) those lines share two L1 sets,
      // and the epilogue took a tenth of an fp32 GEMM's time in conflict misses.
      const int64_t tokens = n - t0 < width ? n - t0 : width;
      for (int64_t j = 0; j < tokens; ++j) {
        for (int64_t r = p0; r < p1; ++r) epilogue(r, t0 + j, tile[(r - p0) * kPackTokens + j]);
      }
    }
    for (int64_t t = packed_tokens; t < n; t += kTokens) {
      const int tokens = static_cast<int>(n - t < kTokens ? n - t : kTokens);
      int64_t r = p0;
      for (; r + kTileRows <= p1; r += kTileRows) {
        run_tile<F32Format, kTileRows>(W, r, K, in, t, tokens, kTileRows, epilogue);
      }
      for (; r < p1; ++r) run_tile<F32Format, 1>(W, r, K, in, t, tokens, 1, epilogue);
    }
  }
}

// epilogue(row, token, dot(W[row, :], input token)) for rows [r0, r1) of W (N, K) and the n
// inputs. Rows go by panels of ~16 KB of weights (a multiple of kTileRows rows): a panel is read
// from memory once and stays in L1 while every tile of inputs passes over it, so the inputs (n x
// K, from L2) are re-read once per panel, not once per kTileRows rows. Within a panel, kTileRows
// rows at a time, then single rows; row-padded formats go by whole groups (r0 a multiple of
// kTileRows), their padding rows computed but not passed on.
// The rows of a for_rows chunk come in multiples of this for gemm_rows of n inputs: whole groups
// of 16 rows for the bf16 lane tiles (a chunk of 88 rows, as akane-124m's Wq got, spent a quarter
// of its last tile on padding rows), else the register tiles' rows.
template <typename Fmt>
inline int gemm_row_block(int64_t n) {
#if SL_BF16_DOT
  if constexpr (std::is_same_v<Fmt, Bf16Format>) {
    if (n >= kBf16LaneMinTokens) return static_cast<int>(kBf16LaneRows);
  }
#endif
  (void)n;
  return kTileRows;
}

template <typename Fmt, typename Epilogue>
inline void gemm_rows(const Mat& W, const Input* in, int64_t n, int64_t K, int64_t r0, int64_t r1,
                      Epilogue epilogue) {
  if constexpr (std::is_same_v<Fmt, F32Format>) {
    if (in[0].packed != nullptr) {
      gemm_rows_packed(W, in, n, K, r0, r1, epilogue);
      return;
    }
  }
  constexpr int kTokens = tile_tokens<Fmt>();
  const int64_t row_bytes = Fmt::row_bytes(K) > 0 ? Fmt::row_bytes(K) : 1;
  int64_t panel = 16384 / row_bytes / kTileRows * kTileRows;
  panel = panel < kTileRows ? kTileRows : (panel > 64 ? 64 : panel);
#if SL_BF16_DOT
  if constexpr (std::is_same_v<Fmt, Bf16Format>) {
    if (n >= kBf16LaneMinTokens) {
      gemm_rows_bf16_lanes(W, in, n, K, r0, r1, epilogue);
      return;
    }
  }
#endif
#if SL_Q_LANES
  if constexpr (std::is_same_v<Fmt, QFormat<kQ8>> || std::is_same_v<Fmt, QFormat<kQ4>>) {
    if (n >= kLaneMinTokens) {
      gemm_rows_lanes<std::is_same_v<Fmt, QFormat<kQ8>> ? kQ8 : kQ4>(W, in, n, K, r0, r1, panel,
                                                                    epilogue);
      return;
    }
  }
#endif
  for (int64_t p0 = r0; p0 < r1; p0 += panel) {
    const int64_t p1 = p0 + panel < r1 ? p0 + panel : r1;
    for (int64_t t = 0; t < n; t += kTokens) {
      const int tokens = static_cast<int>(n - t < kTokens ? n - t : kTokens);
      int64_t r = p0;
      if constexpr (Fmt::kPaddedRows) {
        for (; r < p1; r += kTileRows) {
          run_tile<Fmt, kTileRows>(W, r, K, in, t, tokens, p1 - r, epilogue);
        }
      } else {
        for (; r + kTileRows <= p1; r += kTileRows) {
          run_tile<Fmt, kTileRows>(W, r, K, in, t, tokens, kTileRows, epilogue);
        }
        for (; r < p1; ++r) run_tile<Fmt, 1>(W, r, K, in, t, tokens, 1, epilogue);
      }
    }
  }
}

// Workspace of sl_forward_tokens for n tokens (floats): per token [x: d][h: d][q: n_q][k: n_kv]
// [v: n_kv][attn: n_q][hidden: ffn][gate: ffn][input codes: widest / 4][input scales, sums:
// 2 x widest / 32], then [packed inputs: n rounded up to kPackTokens, x widest], then per thread
// [scores: max_positions]; each part padded to 16 floats.
struct TokensWorkspace {
  float* x;  // the residual streams, token t at x + t * d_stride
  float* h;  // their normalized copies (GEMV inputs)
  float* q;
  float* k;
  float* v;
  float* attn;
  float* hidden;
  float* gate;
  int8_t* codes;  // token t's int8 input blocks at codes + t * codes_stride
  float* code_scales;
  float* code_sums;
  float* scores;
  float* packed;  // fp32 weights: the phase's inputs packed for the outer-product tiles
  int64_t d_stride, q_stride, kv_stride, ffn_stride, codes_stride, blocks_stride, scores_stride;
};

// Tokens per attention run (attend_run) for `group` query heads per KV head: at most 128
// queries go together (their pointers live on the stack); 0: token by token only.
inline int64_t attention_run_tokens(int64_t group) {
#if SL_TILED_ATTENTION
  const int64_t tokens = kAttnMaxQueries / group < kAttnRunTokens ? kAttnMaxQueries / group
                                                                  : kAttnRunTokens;
  return tokens >= kAttnMinRunTokens ? tokens : 0;
#else
  (void)group;
  return 0;
#endif
}

// Floats of one thread's attention scratch for a call of n tokens: score rows for the queries of
// a run (one row token by token), then a transposed key block.
inline int64_t attention_scratch_floats(int64_t n, int64_t group, int64_t hd,
                                        int64_t max_positions) {
  const int64_t run = attention_run_tokens(group);
  const int64_t queries = run > 0 && n >= kAttnMinRunTokens ? run * group : 1;
  return queries * round16(max_positions) + round16(hd * 16);
}

inline int64_t tokens_workspace_floats(int64_t d_model, int64_t n_q, int64_t n_kv, int64_t hd,
                                       int64_t ffn, int64_t max_positions, int64_t threads,
                                       int64_t n) {
  const int64_t widest = widest_input(d_model, n_q, ffn);
  const int64_t per_token = 2 * round16(d_model) + 2 * round16(n_q) + 2 * round16(n_kv) +
                            2 * round16(ffn) + round16(widest / 4) + 2 * round16(widest / kQBlock);
  const int64_t packed = (n + kPackTokens - 1) / kPackTokens * kPackTokens * widest;
  return n * per_token + threads * attention_scratch_floats(n, n_q / n_kv, hd, max_positions) +
         round16(packed);
}

TokensWorkspace carve_tokens(const SlModel* m, int64_t n, int64_t max_positions) {
  const int64_t n_q = m->n_head * m->head_dim;
  const int64_t n_kv = m->n_kv_head * m->head_dim;
  const int64_t widest = widest_input(m->d_model, n_q, m->ffn_hidden);
  TokensWorkspace w;
  w.d_stride = round16(m->d_model);
  w.q_stride = round16(n_q);
  w.kv_stride = round16(n_kv);
  w.ffn_stride = round16(m->ffn_hidden);
  w.codes_stride = 4 * round16(widest / 4);  // bytes
  w.blocks_stride = round16(widest / kQBlock);
  w.scores_stride =
      attention_scratch_floats(n, m->n_head / m->n_kv_head, m->head_dim, max_positions);
  w.x = m->workspace;
  w.h = w.x + n * w.d_stride;
  w.q = w.h + n * w.d_stride;
  w.k = w.q + n * w.q_stride;
  w.v = w.k + n * w.kv_stride;
  w.attn = w.v + n * w.kv_stride;
  w.hidden = w.attn + n * w.q_stride;
  w.gate = w.hidden + n * w.ffn_stride;
  float* codes = w.gate + n * w.ffn_stride;
  w.codes = reinterpret_cast<int8_t*>(codes);
  w.code_scales = codes + n * (w.codes_stride / 4);
  w.code_sums = w.code_scales + n * w.blocks_stride;
  w.packed = w.code_sums + n * w.blocks_stride;
  w.scores = w.packed + round16((n + kPackTokens - 1) / kPackTokens * kPackTokens * widest);
  return w;
}

// The GEMM inputs: token t's vector at x + t * stride (K values), and for q8/q4 weights its int8
// blocks (quantized here, one token per chunk of a phase); bf16 rounds x in place.
template <typename Fmt>
void prepare_inputs(Runner& runner, float* x, int64_t stride, int64_t K, int64_t n,
                    const TokensWorkspace& ws, Input* in) {
  for (int64_t t = 0; t < n; ++t) {
    in[t] = Input{x + t * stride, ws.codes + t * ws.codes_stride,
                  ws.code_scales + t * ws.blocks_stride, ws.code_sums + t * ws.blocks_stride};
  }
  if constexpr (Fmt::kIntInput) {
    auto quantize = [&](int64_t t, int) {
      quantize_input(in[t].x, K, in[t].q, in[t].d, in[t].sums);
    };
    runner.run(n, quantize);
  }
  if constexpr (std::is_same_v<Fmt, Bf16Format>) {
#if SL_BF16_DOT
    // The packed area (fp32 weights only) holds the bf16 copies: K values of 2 bytes per token.
    uint16_t* copies = reinterpret_cast<uint16_t*>(ws.packed);
    const int64_t copy_stride = (K + 31) / 32 * 32;
#endif
    auto round = [&](int64_t t, int) {
      round_to_bf16_precision(x + t * stride, K);
#if SL_BF16_DOT
      to_bf16(in[t].x, K, copies + t * copy_stride);
      if (K % 2 == 1) copies[t * copy_stride + K] = 0;  // the lane tiles read pairs
      in[t].xb = copies + t * copy_stride;
#endif
    };
    runner.run(n, round);
  }
  if constexpr (std::is_same_v<Fmt, F32Format>) {
    // Fewer inputs than a packed block keep the dot tiles (padding a block with zeros would
    // multiply the work of a small batch step).
    if (packed_token_count(n) == 0) return;
    // Block b holds its tokens (pack_block) as (K, kPackTokens): value k of each of its tokens
    // side by side (zeros past n), the layout the outer-product tile reads one row of per k.
    float* packed = ws.packed;
    const int64_t packed_tokens = packed_token_count(n);
    auto pack = [&](int64_t block, int) {
      float* out = packed + block * K * kPackTokens;
      const PackBlock place = pack_block(packed_tokens, block);
      for (int64_t j = 0; j < place.width; ++j) {
        const int64_t t = place.start + j;
        if (t < n) {
          const float* source = in[t].x;
          for (int64_t k = 0; k < K; ++k) out[k * kPackTokens + j] = source[k];
        } else {
          for (int64_t k = 0; k < K; ++k) out[k * kPackTokens + j] = 0.0f;
        }
      }
    };
    runner.run(pack_block_count(packed_tokens), pack);
    in[0].packed = packed;
  }
}

struct AttnRun {
  int64_t first;   // its first token in the call
  int64_t tokens;  // consecutive positions of one row from there
};

template <typename Fmt>
int forward_tokens(const SlModel* m, int64_t n, const int64_t* tokens, const int64_t* rows,
                   const int64_t* positions, float* logits, const int64_t* logit_rows, int threads,
                   int64_t max_positions) {
  const int64_t d = m->d_model;
  const int64_t hd = m->head_dim;
  const int64_t n_q = m->n_head * hd;
  const int64_t n_kv = m->n_kv_head * hd;
  const int64_t group = m->n_head / m->n_kv_head;  // query heads per KV head
  const int64_t ffn = m->ffn_hidden;
  const float eps = m->norm_eps;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const TokensWorkspace ws = carve_tokens(m, n, max_positions);
  std::vector<Input> inputs(static_cast<size_t>(n));
  Input* in = inputs.data();
  Runner runner(threads);
  const int row_block = gemm_row_block<Fmt>(n);

  for (int64_t t = 0; t < n; ++t) {
    float* x = ws.x + t * ws.d_stride;
    std::memcpy(x, m->token_embedding + tokens[t] * d, sizeof(float) * d);
    if (m->embedding_norm_w) norm(x, m->embedding_norm_w, nullptr, d, eps, kRmsNorm, x);
    if (m->position_embedding) {
      for (int64_t i = 0; i < d; ++i) x[i] += m->position_embedding[positions[t] * d + i];
    }
  }

  // The attention's units: runs of tokens at consecutive positions of one row (a prefill's chunk
  // of kAttnRunTokens), or single tokens (batch steps, short runs, or hd not whole vectors).
  std::vector<AttnRun> runs;
  {
#if SL_TILED_ATTENTION
    const int64_t longest = hd % kLanes == 0 ? attention_run_tokens(group) : 0;
#else
    const int64_t longest = 0;
#endif
    for (int64_t t = 0; t < n;) {
      int64_t length = 1;
      while (t + length < n && length < longest && rows[t + length] == rows[t] &&
             positions[t + length] == positions[t + length - 1] + 1) {
        ++length;
      }
      if (length >= kAttnMinRunTokens) {
        runs.push_back({t, length});
      } else {
        for (int64_t i = 0; i < length; ++i) runs.push_back({t + i, 1});
      }
      t += length;
    }
  }

  const int64_t qkv_rows[3] = {n_q, n_kv, n_kv};
  const int64_t d_rows[1] = {d};
  const int64_t ffn_rows[1] = {ffn};
  const int64_t vocab_rows[1] = {m->vocab};
  auto normalize_all = [&](const float* w, const float* b) {
    for (int64_t t = 0; t < n; ++t) {
      norm(ws.x + t * ws.d_stride, w, b, d, eps, m->norm_kind, ws.h + t * ws.d_stride);
    }
  };
  for (int64_t layer = 0; layer < m->n_layer; ++layer) {
    const SlLayer& L = m->layers[layer];
    normalize_all(L.attn_norm_w, L.attn_norm_b);
    prepare_inputs<Fmt>(runner, ws.h, ws.d_stride, d, n, ws, in);

    // q, k, v (n tokens each) as one phase over the rows of Wq, Wk, Wv.
    const Mat weights[3] = {{L.q_w, L.q_s}, {L.k_w, L.k_s}, {L.v_w, L.v_s}};
    const float* biases[3] = {L.q_b, L.k_b, L.v_b};
    float* outs[3] = {ws.q, ws.k, ws.v};
    const int64_t strides[3] = {ws.q_stride, ws.kv_stride, ws.kv_stride};
    for_rows(runner, qkv_rows, 3, Fmt::row_bytes(d), row_block,
             [&](int part, int64_t r0, int64_t r1, int) {
               float* out = outs[part];
               const float* bias = biases[part];
               const int64_t stride = strides[part];
               gemm_rows<Fmt>(weights[part], in, n, d, r0, r1,
                              [&](int64_t r, int64_t t, float value) {
                                out[t * stride + r] = value + bias_at(bias, r);
                              });
             });

    // Phase 1, per (token, KV head): QK-norm and RoPE at the token's position, then its k and v
    // into its row's cache. Every write lands before any token of the call attends (phase 2).
    auto place = [&](int64_t chunk, int) {
      const int64_t t = chunk / m->n_kv_head;
      const int64_t g = chunk % m->n_kv_head;
      const int64_t pos = positions[t];
      const float* cos = m->rope_cos ? m->rope_cos + pos * hd : nullptr;
      const float* sin = m->rope_sin ? m->rope_sin + pos * hd : nullptr;
      float* kg = ws.k + t * ws.kv_stride + g * hd;
      if (L.k_norm_w) norm(kg, L.k_norm_w, nullptr, hd, eps, kRmsNorm, kg);
      if (cos) rope(kg, cos, sin, hd);
      const int64_t offset = rows[t] * m->cache_row_stride + g * m->cache_head_stride + pos * hd;
      const float* vg = ws.v + t * ws.kv_stride + g * hd;
      if (m->kv_type == kKvFp16) {
        store_kv(static_cast<uint16_t*>(L.keys) + offset, kg, hd);
        store_kv(static_cast<uint16_t*>(L.values) + offset, vg, hd);
      } else {
        store_kv(static_cast<float*>(L.keys) + offset, kg, hd);
        store_kv(static_cast<float*>(L.values) + offset, vg, hd);
      }
      for (int64_t head = g * group; head < (g + 1) * group; ++head) {
        float* qh = ws.q + t * ws.q_stride + head * hd;
        if (L.q_norm_w) norm(qh, L.q_norm_w, nullptr, hd, eps, kRmsNorm, qh);
        if (cos) rope(qh, cos, sin, hd);
      }
    };
    runner.run(n * m->n_kv_head, place);

    // Phase 2, per (run, KV head): causal softmax attention of its query heads over positions
    // 0..position of the token's row; runs of consecutive positions together (attend_run).
    auto attend = [&](int64_t chunk, int thread) {
      // The last runs first: they attend over the most positions.
      const AttnRun run = runs[runs.size() - 1 - static_cast<size_t>(chunk / m->n_kv_head)];
      const int64_t g = chunk % m->n_kv_head;
      float* scores = ws.scores + thread * ws.scores_stride;
      const int64_t base = rows[run.first] * m->cache_row_stride + g * m->cache_head_stride;
#if SL_TILED_ATTENTION
      if (run.tokens > 1) {
        const float* queries[kAttnMaxQueries];
        float* outs[kAttnMaxQueries];
        int64_t counts[kAttnMaxQueries];
        int64_t M = 0;
        for (int64_t t = run.first; t < run.first + run.tokens; ++t) {
          for (int64_t head = g * group; head < (g + 1) * group; ++head, ++M) {
            queries[M] = ws.q + t * ws.q_stride + head * hd;
            outs[M] = ws.attn + t * ws.q_stride + head * hd;
            counts[M] = positions[t] + 1;
          }
        }
        const int64_t score_stride = round16(max_positions);
        float* kt = scores + M * score_stride;
        if (m->kv_type == kKvFp16) {
          attend_run(static_cast<const uint16_t*>(L.keys) + base,
                     static_cast<const uint16_t*>(L.values) + base, queries, counts, M, hd, scale,
                     scores, score_stride, kt, outs);
        } else {
          attend_run(static_cast<const float*>(L.keys) + base,
                     static_cast<const float*>(L.values) + base, queries, counts, M, hd, scale,
                     scores, score_stride, kt, outs);
        }
        return;
      }
#endif
      const int64_t t = run.first;
      const int64_t pos = positions[t];
      float* q_heads = ws.q + t * ws.q_stride + g * group * hd;
      float* out_heads = ws.attn + t * ws.q_stride + g * group * hd;
      // kg null: phase 1 wrote this token's k and v already
      if (m->kv_type == kKvFp16) {
        attend_group<uint16_t>(L.keys, L.values, base, nullptr, nullptr, q_heads, group, pos, hd,
                               scale, scores, out_heads);
      } else {
        attend_group<float>(L.keys, L.values, base, nullptr, nullptr, q_heads, group, pos, hd,
                            scale, scores, out_heads);
      }
    };
    runner.run(static_cast<int64_t>(runs.size()) * m->n_kv_head, attend);

    // x += Wo attn (+ bias) for every token.
    prepare_inputs<Fmt>(runner, ws.attn, ws.q_stride, n_q, n, ws, in);
    const Mat o_w{L.o_w, L.o_s};
    for_rows(runner, d_rows, 1, Fmt::row_bytes(n_q), row_block,
             [&](int, int64_t r0, int64_t r1, int) {
               gemm_rows<Fmt>(o_w, in, n, n_q, r0, r1, [&](int64_t r, int64_t t, float value) {
                 ws.x[t * ws.d_stride + r] += value + bias_at(L.o_b, r);
               });
             });

    normalize_all(L.mlp_norm_w, L.mlp_norm_b);
    // hidden = act(Wup h), or silu(Wgate h) * Wup h with the gate rows of a chunk computed first.
    const bool swiglu = m->mlp_kind == kSwiGlu;
    prepare_inputs<Fmt>(runner, ws.h, ws.d_stride, d, n, ws, in);
    const Mat gate_w{L.gate_w, L.gate_s};
    const Mat up_w{L.up_w, L.up_s};
    const int64_t up_bytes = (swiglu ? 2 : 1) * Fmt::row_bytes(d);
    const int64_t fs = ws.ffn_stride;
    for_rows(runner, ffn_rows, 1, up_bytes, row_block, [&](int, int64_t r0, int64_t r1, int) {
      if (swiglu) {
        gemm_rows<Fmt>(gate_w, in, n, d, r0, r1, [&](int64_t r, int64_t t, float value) {
          ws.gate[t * fs + r] = value + bias_at(L.gate_b, r);
        });
        const int64_t rows_end = r1 < ffn ? r1 : ffn;
        for (int64_t t = 0; t < n; ++t) silu_in_place(ws.gate + t * fs + r0, rows_end - r0);
        gemm_rows<Fmt>(up_w, in, n, d, r0, r1, [&](int64_t r, int64_t t, float value) {
          ws.hidden[t * fs + r] = ws.gate[t * fs + r] * (value + bias_at(L.up_b, r));
        });
      } else {
        gemm_rows<Fmt>(up_w, in, n, d, r0, r1, [&](int64_t r, int64_t t, float value) {
          ws.hidden[t * fs + r] =
              activation(value + bias_at(L.up_b, r), m->mlp_kind, m->leaky_relu_slope);
        });
      }
    });
    prepare_inputs<Fmt>(runner, ws.hidden, fs, ffn, n, ws, in);
    const Mat down_w{L.down_w, L.down_s};
    for_rows(runner, d_rows, 1, Fmt::row_bytes(ffn), row_block,
             [&](int, int64_t r0, int64_t r1, int) {
               gemm_rows<Fmt>(down_w, in, n, ffn, r0, r1, [&](int64_t r, int64_t t, float value) {
                 ws.x[t * ws.d_stride + r] += value + bias_at(L.down_b, r);
               });
             });
  }

  // Final norm and lm_head for the tokens whose logits are asked for, gathered (in call order)
  // into the first `wanted` slots of h; slot j's logits go to row logit_rows[token] of `logits`.
  std::vector<int64_t> out_rows;
  for (int64_t t = 0; t < n; ++t) {
    if (logit_rows[t] < 0) continue;
    const int64_t j = static_cast<int64_t>(out_rows.size());
    norm(ws.x + t * ws.d_stride, m->final_norm_w, m->final_norm_b, d, eps, m->norm_kind,
         ws.h + j * ws.d_stride);
    out_rows.push_back(logit_rows[t]);
  }
  const int64_t wanted = static_cast<int64_t>(out_rows.size());
  if (wanted == 0) return 0;
  prepare_inputs<Fmt>(runner, ws.h, ws.d_stride, d, wanted, ws, in);
  const float cap = m->logit_softcap;
  const Mat head{m->lm_head_w, m->lm_head_s};
  const int64_t vocab = m->vocab;
  for_rows(runner, vocab_rows, 1, Fmt::row_bytes(d), kTileRows,
           [&](int, int64_t r0, int64_t r1, int) {
             gemm_rows<Fmt>(head, in, wanted, d, r0, r1, [&](int64_t r, int64_t j, float value) {
               logits[out_rows[j] * vocab + r] = cap > 0.0f ? cap * std::tanh(value / cap) : value;
             });
           });
  return 0;
}

}  // namespace

extern "C" {

int sl_abi_version() { return 5; }

// Rows per q8/q4 group of the packed layout (checked against the Python side's).
int sl_q_row_group() { return kQRowGroup; }

// 16 (AVX-512), 8 (AVX2) or 0 (neither: the Python side keeps PyTorch's path).
int sl_simd_width() {
#if defined(__AVX512F__)
  return 16;
#elif defined(__AVX2__)
  return 8;
#else
  return 0;
#endif
}

// The instruction sets this build was compiled for (bits: 1 avx2, 2 fma, 4 f16c, 8 avx512f,
// 16 avx512bw, 32 avx512vl, 64 avx512_vnni, 128 avx512_bf16). The Python side checks them
// against the CPU's flags before the first call: a binary built elsewhere never runs here.
int sl_isa_mask() {
  int mask = 0;
#if defined(__AVX2__)
  mask |= 1;
#endif
#if defined(__FMA__)
  mask |= 2;
#endif
#if defined(__F16C__)
  mask |= 4;
#endif
#if defined(__AVX512F__)
  mask |= 8;
#endif
#if defined(__AVX512BW__)
  mask |= 16;
#endif
#if defined(__AVX512VL__)
  mask |= 32;
#endif
#if defined(__AVX512VNNI__)
  mask |= 64;
#endif
#if defined(__AVX512BF16__)
  mask |= 128;
#endif
  return mask;
}

int64_t sl_workspace_floats(int64_t d_model, int64_t n_head, int64_t n_kv_head, int64_t head_dim,
                            int64_t ffn_hidden, int64_t max_positions, int64_t threads) {
  const int64_t n_q = n_head * head_dim;
  const int64_t n_kv = n_kv_head * head_dim;
  const int64_t widest = widest_input(d_model, n_q, ffn_hidden);
  return 2 * round16(d_model) + round16(n_q + 2 * n_kv) + round16(n_q) + round16(2 * ffn_hidden) +
         round16(widest / 4) + 2 * round16(widest / kQBlock) + threads * round16(max_positions);
}

// y (N) = W (N, K) x (K) (+ b), rows split over `threads` threads. For tests and measurements.
void sl_gemv(const float* W, const float* b, const float* x, float* y, int64_t N, int64_t K,
             int threads) {
  gemv_format<F32Format>(Mat{W, nullptr}, b, x, y, N, K, threads);
}

// The same in a weight type (WeightType): W in that format, S its block scales (q8/q4) or null.
// Returns -1 for an unknown type.
int sl_gemv_typed(int32_t type, const void* W, const uint16_t* S, const float* b, const float* x,
                  float* y, int64_t N, int64_t K, int threads) {
  const Mat matrix{W, S};
  switch (type) {
    case kF32:
      gemv_format<F32Format>(matrix, b, x, y, N, K, threads);
      return 0;
    case kQ8:
      gemv_format<QFormat<kQ8>>(matrix, b, x, y, N, K, threads);
      return 0;
    case kQ4:
      gemv_format<QFormat<kQ4>>(matrix, b, x, y, N, K, threads);
      return 0;
    case kBf16:
      gemv_format<Bf16Format>(matrix, b, x, y, N, K, threads);
      return 0;
    default:
      return -1;
  }
}

// One decode step for one sequence: the token `token` at position `pos` (the cache holds positions
// 0..pos-1 already; this writes position pos). logits: (vocab) floats. The caller checks that
// pos < max_positions (the cache's and the workspace's length) and that the workspace has room
// for `threads` threads. Returns 0, or -1 for an unknown weight type.
int sl_decode_step(const SlModel* m, int64_t token, int64_t pos, float* logits, int threads,
                   int64_t max_positions) {
  switch (m->weight_type) {
    case kF32:
      return decode_step<F32Format>(m, token, pos, logits, threads, max_positions);
    case kQ8:
      return decode_step<QFormat<kQ8>>(m, token, pos, logits, threads, max_positions);
    case kQ4:
      return decode_step<QFormat<kQ4>>(m, token, pos, logits, threads, max_positions);
    case kBf16:
      return decode_step<Bf16Format>(m, token, pos, logits, threads, max_positions);
    default:
      return -1;
  }
}

// Workspace floats sl_forward_tokens needs for n tokens (sl_decode_step needs at most this for
// n = 1).
int64_t sl_forward_workspace_floats(int64_t d_model, int64_t n_head, int64_t n_kv_head,
                                    int64_t head_dim, int64_t ffn_hidden, int64_t max_positions,
                                    int64_t threads, int64_t n) {
  return tokens_workspace_floats(d_model, n_head * head_dim, n_kv_head * head_dim, head_dim,
                                 ffn_hidden, max_positions, threads, n);
}

// n tokens through the model in one call: token t goes to cache row rows[t] at position
// positions[t] and attends over positions 0..positions[t] of that row (its earlier positions
// already in the cache, or written by earlier tokens of this call). Batch decode steps (n rows,
// one token each) and prefills (one row, consecutive positions) alike. logit_rows[t] >= 0: token
// t's logits go to row logit_rows[t] of `logits` (rows of `vocab` floats); < 0: none (a prefill
// asks for its last token's only). The caller checks tokens, rows and positions (< max_positions,
// the cache's and the workspace's length), that no two tokens share a row and position, and that
// the workspace holds sl_forward_workspace_floats(..., threads, n). Returns 0, or -1 for an
// unknown weight type.
int sl_forward_tokens(const SlModel* m, int64_t n, const int64_t* tokens, const int64_t* rows,
                      const int64_t* positions, float* logits, const int64_t* logit_rows,
                      int threads, int64_t max_positions) {
  switch (m->weight_type) {
    case kF32:
      return forward_tokens<F32Format>(m, n, tokens, rows, positions, logits, logit_rows, threads,
                                       max_positions);
    case kQ8:
      return forward_tokens<QFormat<kQ8>>(m, n, tokens, rows, positions, logits, logit_rows,
                                          threads, max_positions);
    case kQ4:
      return forward_tokens<QFormat<kQ4>>(m, n, tokens, rows, positions, logits, logit_rows,
                                          threads, max_positions);
    case kBf16:
      return forward_tokens<Bf16Format>(m, n, tokens, rows, positions, logits, logit_rows,
                                        threads, max_positions);
    default:
      return -1;
  }
}

}  // extern "C"
