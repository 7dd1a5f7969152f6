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
// model's own parameters and KV cache (no copies), then calls `sl_decode_step` once per token.
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

#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
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

}  // namespace

extern "C" {

// One transformer block's tensors. Weights are row-major (out_features, in_features), contiguous,
// fp32. Optional tensors (biases, LayerNorm bias, QK-norm weights, gate) are null when absent.
struct SlLayer {
  const float* attn_norm_w;
  const float* attn_norm_b;
  const float* q_w;
  const float* q_b;
  const float* k_w;
  const float* k_b;
  const float* v_w;
  const float* v_b;
  const float* o_w;
  const float* o_b;
  const float* q_norm_w;
  const float* k_norm_w;
  const float* mlp_norm_w;
  const float* mlp_norm_b;
  const float* gate_w;
  const float* gate_b;
  const float* up_w;
  const float* up_b;
  const float* down_w;
  const float* down_b;
  // This layer's cache for the decoded row: element [head, position, dim] lives at
  // keys[head * cache_head_stride + position * head_dim + dim].
  float* keys;
  float* values;
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
  const float* lm_head_w;  // (vocab, d_model)
  const SlLayer* layers;   // n_layer entries
  // Workspace, at least sl_workspace_floats(...) floats; see the layout in sl_decode_step.
  float* workspace;
};

}  // extern "C"

namespace {

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

inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

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

// y[r] = epilogue(r, dot(W[r, :], x)) for rows [r0, r1) of W (N, K): kRowBlock rows at a time,
// then 4, then 1.
template <typename Epilogue>
inline void gemv_rows(const float* W, const float* x, int64_t K, int64_t r0, int64_t r1,
                      Epilogue epilogue) {
  int64_t r = r0;
  float out[kRowBlock];
  for (; r + kRowBlock <= r1; r += kRowBlock) {
    dot_rows<kRowBlock>(W + r * K, K, x, out);
    for (int i = 0; i < kRowBlock; ++i) epilogue(r + i, out[i]);
  }
  for (; r + 4 <= r1; r += 4) {
    dot_rows<4>(W + r * K, K, x, out);
    for (int i = 0; i < 4; ++i) epilogue(r + i, out[i]);
  }
  for (; r < r1; ++r) epilogue(r, dot(W + r * K, x, K));
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

// A GEMV phase over the rows of `segments` matrices (rows[i] rows each, `row_floats` floats of
// weights per row): chunks of rows that cover every row once; body(segment, r0, r1, thread).
// Chunks hold ~128 KB of weights (a multiple of kRowBlock rows), and at least ~4 per thread so
// small matrices still split evenly.
template <typename Body>
void for_rows(Runner& runner, const int64_t* rows, int segments, int64_t row_floats, Body body) {
  int64_t total = 0;
  for (int i = 0; i < segments; ++i) total += rows[i];
  int64_t chunk = 32768 / (row_floats > 0 ? row_floats : 1);
  const int64_t even = (total + 4 * runner.threads() - 1) / (4 * runner.threads());
  chunk = chunk < even ? chunk : even;
  chunk = (chunk + kRowBlock - 1) / kRowBlock * kRowBlock;
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

// Workspace layout (floats): [x: d][h: d][qkv: n_q + 2 n_kv][attn: n_q][ffn: 2 ffn]
// [per thread: scores: max_positions], each part padded to 16 floats.
inline int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

struct Workspace {
  float* x;       // the residual stream (d)
  float* h;       // its normalized copy, the input of the next GEMV (d)
  float* qkv;     // q (n_q), k (n_kv), v (n_kv)
  float* attn;    // attention output, the input of Wo (n_q)
  float* ffn;     // MLP hidden (ffn), then the SwiGLU gate (ffn)
  float* scores;  // per thread: attention weights over positions (max_positions)
  int64_t scores_stride;
};

Workspace carve(const SlModel* m, int64_t max_positions) {
  const int64_t n_q = m->n_head * m->head_dim;
  const int64_t n_kv = m->n_kv_head * m->head_dim;
  Workspace w;
  w.x = m->workspace;
  w.h = w.x + round16(m->d_model);
  w.qkv = w.h + round16(m->d_model);
  w.attn = w.qkv + round16(n_q + 2 * n_kv);
  w.ffn = w.attn + round16(n_q);
  w.scores = w.ffn + round16(2 * m->ffn_hidden);
  w.scores_stride = round16(max_positions);
  return w;
}

}  // namespace

extern "C" {

int sl_abi_version() { return 2; }

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

int64_t sl_workspace_floats(int64_t d_model, int64_t n_head, int64_t n_kv_head, int64_t head_dim,
                            int64_t ffn_hidden, int64_t max_positions, int64_t threads) {
  const int64_t n_q = n_head * head_dim;
  const int64_t n_kv = n_kv_head * head_dim;
  return 2 * round16(d_model) + round16(n_q + 2 * n_kv) + round16(n_q) + round16(2 * ffn_hidden) +
         threads * round16(max_positions);
}

// y (N) = W (N, K) x (K) (+ b), rows split over `threads` threads. For tests and measurements.
void sl_gemv(const float* W, const float* b, const float* x, float* y, int64_t N, int64_t K,
             int threads) {
  Runner runner(threads);
  const int64_t rows[1] = {N};
  for_rows(runner, rows, 1, K, [&](int, int64_t r0, int64_t r1, int) {
    gemv_rows(W, x, K, r0, r1, [&](int64_t r, float v) { y[r] = v + bias_at(b, r); });
  });
}

// One decode step for one sequence: the token `token` at position `pos` (the cache holds positions
// 0..pos-1 already; this writes position pos). logits: (vocab) floats. The caller checks that
// pos < max_positions (the cache's and the workspace's length) and that the workspace has room
// for `threads` threads. Returns 0.
int sl_decode_step(const SlModel* m, int64_t token, int64_t pos, float* logits, int threads,
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
  for (int64_t layer = 0; layer < m->n_layer; ++layer) {
    const SlLayer& L = m->layers[layer];
    norm(x, L.attn_norm_w, L.attn_norm_b, d, eps, m->norm_kind, h);

    // q, k, v as one phase over the rows of Wq, Wk, Wv.
    const float* weights[3] = {L.q_w, L.k_w, L.v_w};
    const float* biases[3] = {L.q_b, L.k_b, L.v_b};
    float* outs[3] = {q, k, v};
    for_rows(runner, qkv_rows, 3, d, [&](int part, int64_t r0, int64_t r1, int) {
      float* out = outs[part];
      const float* bias = biases[part];
      gemv_rows(weights[part], h, d, r0, r1,
                [&](int64_t r, float value) { out[r] = value + bias_at(bias, r); });
    });

    // Attention, one chunk per KV head: QK-norm and RoPE of k, the cache write, then the causal
    // softmax attention of its query heads over positions 0..pos.
    auto attend = [&](int64_t g, int thread) {
      float* scores = ws.scores + thread * ws.scores_stride;
      float* kg = k + g * hd;
      if (L.k_norm_w) norm(kg, L.k_norm_w, nullptr, hd, eps, kRmsNorm, kg);
      if (m->rope_cos) rope(kg, m->rope_cos + pos * hd, m->rope_sin + pos * hd, hd);
      float* key_rows = L.keys + g * m->cache_head_stride;  // (positions, hd)
      float* value_rows = L.values + g * m->cache_head_stride;
      std::memcpy(key_rows + pos * hd, kg, sizeof(float) * hd);
      std::memcpy(value_rows + pos * hd, v + g * hd, sizeof(float) * hd);
      for (int64_t head = g * group; head < (g + 1) * group; ++head) {
        float* qh = q + head * hd;
        if (L.q_norm_w) norm(qh, L.q_norm_w, nullptr, hd, eps, kRmsNorm, qh);
        if (m->rope_cos) rope(qh, m->rope_cos + pos * hd, m->rope_sin + pos * hd, hd);
        float top = -INFINITY;
        for (int64_t j = 0; j <= pos; ++j) {
          scores[j] = dot(key_rows + j * hd, qh, hd) * scale;
          top = scores[j] > top ? scores[j] : top;
        }
        float total = 0.0f;
        for (int64_t j = 0; j <= pos; ++j) {
          scores[j] = std::exp(scores[j] - top);
          total += scores[j];
        }
        float* out = ws.attn + head * hd;
        std::memset(out, 0, sizeof(float) * hd);
        for (int64_t j = 0; j <= pos; ++j) axpy(scores[j], value_rows + j * hd, out, hd);
        const float inverse = 1.0f / total;
        for (int64_t i = 0; i < hd; ++i) out[i] *= inverse;
      }
    };
    runner.run(m->n_kv_head, attend);

    // x += Wo attn (+ bias), each chunk adding its rows of the output into x.
    for_rows(runner, d_rows, 1, n_q, [&](int, int64_t r0, int64_t r1, int) {
      gemv_rows(L.o_w, ws.attn, n_q, r0, r1,
                [&](int64_t r, float value) { x[r] += value + bias_at(L.o_b, r); });
    });

    norm(x, L.mlp_norm_w, L.mlp_norm_b, d, eps, m->norm_kind, h);
    // hidden = act(Wup h), or silu(Wgate h) * Wup h with the gate rows of a chunk computed first.
    const bool swiglu = m->mlp_kind == kSwiGlu;
    for_rows(runner, ffn_rows, 1, swiglu ? 2 * d : d, [&](int, int64_t r0, int64_t r1, int) {
      if (swiglu) {
        gemv_rows(L.gate_w, h, d, r0, r1,
                  [&](int64_t r, float value) { gate[r] = value + bias_at(L.gate_b, r); });
        gemv_rows(L.up_w, h, d, r0, r1, [&](int64_t r, float value) {
          hidden[r] = activation(gate[r], kSwiGlu, 0.0f) * (value + bias_at(L.up_b, r));
        });
      } else {
        gemv_rows(L.up_w, h, d, r0, r1, [&](int64_t r, float value) {
          hidden[r] = activation(value + bias_at(L.up_b, r), m->mlp_kind, m->leaky_relu_slope);
        });
      }
    });
    for_rows(runner, d_rows, 1, ffn, [&](int, int64_t r0, int64_t r1, int) {
      gemv_rows(L.down_w, hidden, ffn, r0, r1,
                [&](int64_t r, float value) { x[r] += value + bias_at(L.down_b, r); });
    });
  }

  norm(x, m->final_norm_w, m->final_norm_b, d, eps, m->norm_kind, h);
  const float cap = m->logit_softcap;
  for_rows(runner, vocab_rows, 1, d, [&](int, int64_t r0, int64_t r1, int) {
    if (cap > 0.0f) {
      gemv_rows(m->lm_head_w, h, d, r0, r1,
                [&](int64_t r, float value) { logits[r] = cap * std::tanh(value / cap); });
    } else {
      gemv_rows(m->lm_head_w, h, d, r0, r1, [&](int64_t r, float value) { logits[r] = value; });
    }
  });
  return 0;
}

}  // extern "C"
