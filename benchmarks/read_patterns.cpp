// How fast can one or two threads read fp32 weights from memory? Ways of reading the same 256 MB,
// side by side in one run, GB/s (best of 8): plain sums (one stream with 512- or 256-bit loads,
// four streams far apart) and fp32 GEMV loop shapes over a row-major (N, K) matrix, among them the
// decode kernel's (16 adjacent rows, one 512-bit FMA chain each: decode.cpp's kRowBlock), one row
// at a time with four accumulators (the shape of llama.cpp's ggml_vec_dot_f32), and 4 x 4 rows of a
// copy laid out in the order the loop reads it (four long sequential streams). Batch-1 fp32 decode
// reads every weight once per token, so this is its ceiling on the machine.
//
//   g++ -O3 -march=native -pthread benchmarks/read_patterns.cpp -o /tmp/read_patterns
//   /tmp/read_patterns 768 2     # K (a row's length: d_model), threads (1 or 2)
//
// Needs AVX-512F (the reference machine has it). Results: docs/benchmarks.md ("fourteenth session").

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

// Sum of n floats from `w` in `streams` equal parts read side by side (1: one sequential stream).
template <int Streams>
float sum_streams(const float* w, long n) {
  const long part = n / Streams;
  __m512 acc[Streams];
  for (int s = 0; s < Streams; ++s) acc[s] = _mm512_setzero_ps();
  for (long k = 0; k < part; k += 16) {
    for (int s = 0; s < Streams; ++s) acc[s] = _mm512_add_ps(_mm512_load_ps(w + s * part + k), acc[s]);
  }
  __m512 total = acc[0];
  for (int s = 1; s < Streams; ++s) total = _mm512_add_ps(total, acc[s]);
  return _mm512_reduce_add_ps(total);
}

// One sequential stream, four 512-bit (or 256-bit) accumulators.
float sum_512(const float* w, long n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (long k = 0; k < n; k += 64) {
    a0 = _mm512_add_ps(_mm512_load_ps(w + k), a0);
    a1 = _mm512_add_ps(_mm512_load_ps(w + k + 16), a1);
    a2 = _mm512_add_ps(_mm512_load_ps(w + k + 32), a2);
    a3 = _mm512_add_ps(_mm512_load_ps(w + k + 48), a3);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

float sum_256(const float* w, long n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (long k = 0; k < n; k += 32) {
    a0 = _mm256_add_ps(_mm256_load_ps(w + k), a0);
    a1 = _mm256_add_ps(_mm256_load_ps(w + k + 8), a1);
    a2 = _mm256_add_ps(_mm256_load_ps(w + k + 16), a2);
    a3 = _mm256_add_ps(_mm256_load_ps(w + k + 24), a3);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float total = 0.0f;
  for (float lane : lanes) total += lane;
  return total;
}

// y[r] = W[r, :] . x for rows [r0, r1), 16 adjacent rows at a time (the decode kernel's shape).
void gemv_rows16(const float* W, const float* x, float* y, long r0, long r1, long K) {
  for (long r = r0; r < r1; r += 16) {
    __m512 acc[16];
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
    for (long k = 0; k < K; k += 16) {
      const __m512 xv = _mm512_loadu_ps(x + k);
      for (int i = 0; i < 16; ++i) {
        acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(W + (r + i) * K + k), xv, acc[i]);
      }
    }
    for (int i = 0; i < 16; ++i) y[r + i] = _mm512_reduce_add_ps(acc[i]);
  }
}

// One row at a time, four accumulators over 64 values (ggml_vec_dot_f32's shape).
void gemv_single(const float* W, const float* x, float* y, long r0, long r1, long K) {
  for (long r = r0; r < r1; ++r) {
    const float* w = W + r * K;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (long k = 0; k < K; k += 64) {
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 16), _mm512_loadu_ps(x + k + 16), a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 32), _mm512_loadu_ps(x + k + 32), a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 48), _mm512_loadu_ps(x + k + 48), a3);
    }
    y[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
}

// Rows [r0, r1) as 4 regions far apart, 4 rows from each at a time, on a copy laid out as the
// loop reads it: per group of 4 rows, per 16 columns, 4 x 16 floats side by side. Each region is
// then one long sequential stream. (The timing does not depend on the values, so the same
// buffer stands for the tiled copy.)
void gemv_tiled_4x4(const float* T, const float* x, float* y, long r0, long r1, long K) {
  const long span = (r1 - r0) / 16 * 4;  // rows per region
  for (long j = 0; j < span; j += 4) {
    __m512 acc[16];
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
    const float* w[4];
    for (int g = 0; g < 4; ++g) w[g] = T + (r0 + g * span + j) * K;
    for (long k = 0; k < K; k += 16) {
      const __m512 xv = _mm512_loadu_ps(x + k);
      for (int g = 0; g < 4; ++g) {
        for (int i = 0; i < 4; ++i) {
          acc[g * 4 + i] = _mm512_fmadd_ps(_mm512_load_ps(w[g] + i * 16), xv, acc[g * 4 + i]);
        }
        w[g] += 64;
      }
    }
    for (int g = 0; g < 4; ++g) {
      for (int i = 0; i < 4; ++i) y[r0 + g * span + j + i] = _mm512_reduce_add_ps(acc[g * 4 + i]);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || atol(argv[1]) <= 0 || atol(argv[1]) % 64 != 0 || atoi(argv[2]) < 1 ||
      atoi(argv[2]) > 2) {
    fprintf(stderr, "usage: read_patterns K THREADS (K a positive multiple of 64, THREADS 1 or 2)\n");
    return 2;
  }
  const long K = atol(argv[1]);
  const int threads = atoi(argv[2]);
  const long N = (256L << 20) / 4 / K / 64 * 64;  // rows: 256 MB, a multiple of 2 x 16 x 2
  const long n = N * K;
  float* W = static_cast<float*>(aligned_alloc(4096, n * 4));
  for (long i = 0; i < n; ++i) W[i] = 0.5f;
  std::vector<float> x(K, 1.0f), y(N);
  using Gemv = void (*)(const float*, const float*, float*, long, long, long);
  using Sum = float (*)(const float*, long);
  struct Pattern {
    const char* name;
    Sum sum;
    Gemv gemv;
  };
  const Pattern patterns[] = {
      {"sum 1 stream 512-bit", sum_512, nullptr},
      {"sum 1 stream 256-bit", sum_256, nullptr},
      {"sum 4 streams", sum_streams<4>, nullptr},
      {"gemv 16 rows (ours)", nullptr, gemv_rows16},
      {"gemv 1 row (ggml's shape)", nullptr, gemv_single},
      {"gemv 4x4 rows, read-order copy", nullptr, gemv_tiled_4x4},
  };
  const int count = sizeof(patterns) / sizeof(patterns[0]);
  std::vector<double> best(count, 0.0);
  float sink = 0.0f;
  for (int round = 0; round < 8; ++round) {
    for (int p = 0; p < count; ++p) {
      const Pattern& pattern = patterns[p];
      // Each thread reads its own half: rows [0, half) and [half, N).
      const long half = threads == 1 ? N : N / 2;
      float parts[2] = {0.0f, 0.0f};
      auto run = [&](int part) {
        const long r0 = part * half, r1 = part == threads - 1 ? N : r0 + half;
        if (pattern.sum) {
          parts[part] = pattern.sum(W + r0 * K, (r1 - r0) * K);
        } else {
          pattern.gemv(W, x.data(), y.data(), r0, r1, K);
        }
      };
      const auto started = std::chrono::steady_clock::now();
      if (threads == 2) {
        std::thread helper(run, 1);
        run(0);
        helper.join();
      } else {
        run(0);
      }
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      best[p] = std::max(best[p], n * 4.0 / seconds / 1e9);
      sink += parts[0] + parts[1] + y[N / 3];
    }
  }
  printf("256 MB, K = %ld, %d thread(s), GB/s (best of 8):\n", K, threads);
  for (int p = 0; p < count; ++p) {
    printf("  %-32s %6.1f  (%.2fx the decode kernel's shape)\n", patterns[p].name, best[p],
           best[p] / best[3]);
  }
  return sink == 12345.0f ? 1 : 0;  // keeps the sums from being optimized away
}
