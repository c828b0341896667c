// The int8 attention kernel (maefuse_deploy/backends/kernels/int8_attention.cpp, the OpenVINO extension's op)
// against attention in double precision: random heads, uniform attention over many keys (weights of 1/N that a
// calibrated uint8 range rounds to zero), one dominant key, and token counts that are not multiples of the tiles.
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
  maefuse::int8_attention(q.data(), k.data(), v.data(), out.data(), heads, n, scale, parallel_for);
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
  return failures ? 1 : 0;
}
