// The int8 attention kernel (maefuse_deploy/backends/kernels/int8_attention.cpp, the OpenVINO extension's op)
// against attention in double precision: random heads, uniform attention over many keys (weights of 1/N that a
// calibrated uint8 range rounds to zero), one dominant key, token counts that are not multiples of the tiles, and
// the strided layouts (Q, K, V read from the packed qkv tensor, the output written tokens first).
// Exits 77 (skipped) on a CPU without AVX-512 VNNI.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "expect.hpp"
#include "int8_attention.hpp"

namespace {

constexpr int D = maefuse::kInt8AttentionHeadDim;

void parallel_for(int count, const std::function<void(int)>& body) {
  std::atomic<int> next{0};
  auto work = [&] {
    for (int i; (i = next.fetch_add(1)) < count;) body(i);
  };
  std::thread helper(work);
  work();
  helper.join();
}

std::vector<double> reference(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                              int heads, int n, float scale) {
  std::vector<double> out(size_t(heads) * n * D);
  std::vector<double> w(n);
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < n; ++i) {
      double top = -1e300, total = 0;
      for (int j = 0; j < n; ++j) {
        double s = 0;
        for (int c = 0; c < D; ++c) s += double(q[(size_t(h) * n + i) * D + c]) * k[(size_t(h) * n + j) * D + c];
        w[j] = s * scale;
        top = std::max(top, w[j]);
      }
      for (int j = 0; j < n; ++j) total += (w[j] = std::exp(w[j] - top));
      for (int c = 0; c < D; ++c) {
        double acc = 0;
        for (int j = 0; j < n; ++j) acc += w[j] * v[(size_t(h) * n + j) * D + c];
        out[(size_t(h) * n + i) * D + c] = acc / total;
      }
    }
  return out;
}

struct Errors {
  double max = 0, mean = 0, value_range = 0;
};

Errors compare(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v, int heads,
               int n, float scale) {
  std::vector<float> out(q.size(), NAN);
  const maefuse::HeadLayout layout = maefuse::heads_first_layout(heads, n);
  maefuse::int8_attention(q.data(), k.data(), v.data(), layout, out.data(), layout, 1, heads, n, scale,
                          parallel_for);
  const std::vector<double> ref = reference(q, k, v, heads, n, scale);
  Errors e;
  for (size_t x = 0; x < out.size(); ++x) {
    const double err = std::isfinite(out[x]) ? std::fabs(out[x] - ref[x]) : 1e300;
    e.max = std::max(e.max, err);
    e.mean += err / double(out.size());
    e.value_range = std::max(e.value_range, double(std::fabs(v[x])));
  }
  return e;
}

std::vector<float> normal(size_t count, float sigma, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, sigma);
  std::vector<float> x(count);
  for (auto& value : x) value = g(rng);
  return x;
}

// Random heads at the scale of a trained ViT's (scores of a few units): within a few V quantization steps.
void random_heads() {
  for (int n : {1, 5, 37, 64, 65, 200, 1601}) {
    const int heads = 3;
    const size_t count = size_t(heads) * n * D;
    auto q = normal(count, 2.f, 1 + n), k = normal(count, 2.f, 2 + n), v = normal(count, 2.f, 3 + n);
    const Errors e = compare(q, k, v, heads, n, 1.f / std::sqrt(float(D)));
    std::printf("random n=%d: max err %.4g, mean err %.4g (|V| <= %.3g)\n", n, e.max, e.mean, e.value_range);
    EXPECT(e.max <= 0.06 * e.value_range, "n=%d max err %g > 6%% of max|V| %g", n, e.max, e.value_range);
    EXPECT(e.mean <= 0.004 * e.value_range, "n=%d mean err %g > 0.4%% of max|V| %g", n, e.mean, e.value_range);
  }
}

// Q = 0: every key weighs 1/N (1/1600 here). Per-row scaling keeps those weights exact, so the output is the mean
// of V up to V's own quantization (half a step, 1/254 of its range).
void uniform_attention() {
  const int n = 1600;
  std::vector<float> q(size_t(n) * D, 0.f);
  auto k = normal(q.size(), 1.f, 7), v = normal(q.size(), 1.f, 8);
  const Errors e = compare(q, k, v, 1, n, 0.125f);
  std::printf("uniform n=%d: max err %.4g (|V| <= %.3g)\n", n, e.max, e.value_range);
  EXPECT(e.max <= e.value_range / 254.0, "uniform attention: max err %g over half a V step (%g)", e.max,
         e.value_range / 254.0);
}

// One key far above the rest: each row returns that key's value vector.
void dominant_key() {
  const int n = 300;
  auto q = normal(size_t(n) * D, 0.1f, 9), k = normal(q.size(), 0.1f, 10), v = normal(q.size(), 1.f, 11);
  for (int i = 0; i < n; ++i) q[size_t(i) * D] = 10.f;
  k[size_t(123) * D] = 10.f;  // scores 100 x 0.125 = 12.5 above the rest
  const Errors e = compare(q, k, v, 1, n, 0.125f);
  std::printf("dominant key: max err %.4g (|V| <= %.3g)\n", e.max, e.value_range);
  EXPECT(e.max <= 0.02 * e.value_range, "dominant key: max err %g", e.max);
}

// The layouts the OpenVINO op uses to skip the graph's transposes: Q, K and V read from the qkv projection's
// [B][N][3][H][64] output and written as [B][N][H][64] give, element for element, the same numbers as the
// heads-first [B][H][N][64] call (the same arithmetic on the same values).
void layouts() {
  const int batches = 2, heads = 3, n = 37;
  const auto qkv = normal(size_t(batches) * n * 3 * heads * D, 2.f, 12);
  const size_t count = size_t(batches) * heads * n * D;
  std::vector<float> q(count), k(count), v(count);
  for (int b = 0; b < batches; ++b)
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < heads; ++h)
        for (int c = 0; c < D; ++c) {
          const size_t from = (((size_t(b) * n + t) * 3) * heads + h) * D + c, step = size_t(heads) * D;
          const size_t to = ((size_t(b) * heads + h) * n + t) * D + c;
          q[to] = qkv[from];
          k[to] = qkv[from + step];
          v[to] = qkv[from + 2 * step];
        }
  std::vector<float> heads_first(count, NAN), tokens_first(count, NAN);
  const maefuse::HeadLayout plain = maefuse::heads_first_layout(heads, n);
  maefuse::int8_attention(q.data(), k.data(), v.data(), plain, heads_first.data(), plain, batches, heads, n, 0.125f,
                          parallel_for);
  const float* base = qkv.data();
  maefuse::int8_attention(base, base + heads * D, base + 2 * heads * D, maefuse::packed_qkv_layout(heads, n),
                          tokens_first.data(), maefuse::tokens_first_layout(heads, n), batches, heads, n, 0.125f,
                          parallel_for);
  int mismatches = 0;
  for (int b = 0; b < batches; ++b)
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < heads; ++h)
        for (int c = 0; c < D; ++c) {
          const float want = heads_first[((size_t(b) * heads + h) * n + t) * D + c];
          const float got = tokens_first[((size_t(b) * n + t) * heads + h) * D + c];
          mismatches += !(std::isfinite(want) && got == want);
        }
  std::printf("layouts: %d of %zu outputs differ from the heads-first call\n", mismatches, count);
  EXPECT(mismatches == 0, "packed qkv in, tokens first out: %d outputs differ from heads first", mismatches);
  const Errors e = compare(q, k, v, batches * heads, n, 0.125f);
  EXPECT(e.max <= 0.06 * e.value_range, "layouts: heads-first max err %g", e.max);
}

}  // namespace

int main(int argc, char** argv) {
  if (!maefuse::cpu_has_avx512_vnni()) {
    std::puts("SKIPPED: this CPU has no AVX-512 VNNI");
    return 77;
  }
  const std::string which = argc > 1 ? argv[1] : "all";
  if (which == "random" || which == "all") random_heads();
  if (which == "uniform" || which == "all") uniform_attention();
  if (which == "dominant" || which == "all") dominant_key();
  if (which == "layouts" || which == "all") layouts();
  return failures ? 1 : 0;
}
