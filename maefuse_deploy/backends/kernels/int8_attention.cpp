// Softmax attention on the int8 dot-product units: see int8_attention.hpp for the contract and the numerics.
//
// Why it exists: OpenVINO's CPU plugin runs attention's Q K^T in int8 at best and softmax x V in float (f32, or bf16
// on CPUs with BF16 units), because a calibrated uint8 range cannot hold probabilities of about 1/1600 next to
// rows with one weight near 1. Quantizing each probability row by its own maximum can, and the product then runs
// on VNNI: maefuse-l640 at 640x640, int8, 2.27 -> 1.88 s a pair limited to VNNI (benchmarks/README.md).
//
// Layout of one head (tokens N, head width D = 64):
//   Q   -> qu [Nq][64] uint8 (q / scale_q + 128), scale_q per token (times the softmax scale); Nq = N rounded up to
//          kRows (padding rows are 128 = zero)
//   K   -> kp [Nk/16][16 groups of 4 channels][16 tokens][4] int8, scale_k and -128 x row sum per token; Nk = N
//          rounded up to 64 (padding tokens are zero and masked out of the softmax)
//   V   -> vp [N4/4][64 channels][4 tokens] int8, scale_v per channel; N4 = N rounded up to 4
// Each task takes kRows query rows at a time: scores for all keys (int32), softmax into uint8 P rows, then P V.
#include "int8_attention.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace maefuse {
namespace {

constexpr int kD = kInt8AttentionHeadDim;
constexpr int kGroups = kD / 4;  // 4-byte groups of a token's channels: one dpbusd lane each
constexpr int kRows = 6;         // query rows per micro-kernel: 6 rows x 4 vectors = 24 int32 accumulators
constexpr int kKeysPerTile = 64;
constexpr int kBlocksPerTask = 8;  // row blocks per parallel task: 48 query rows

// 255 x 2^x for x <= 0: the softmax's exponent in base 2 (the scores carry log2(e)) after the row maximum is
// subtracted, scaled to the uint8 range of the probabilities it becomes. x = n + f with n an integer and |f| <= 1/2;
// 2^f by a degree-3 polynomial fitted for the least largest relative error on [-1/2, 1/2] (7.5e-5), 20 times below
// the uint8 step (1/255 of the row's largest weight). The degree-6 e^x it replaced (1e-7) took 15 vector operations
// a lane group against 7, in the part of the kernel that takes the most time (softmax over 1600 x 1600 scores a
// head: 24.1 -> 21.1 ms for 2 x 16 heads). x is held at -120 or above (padding keys are -inf), where the result
// is still a normal float: a denormal would cost a microcode assist on some CPUs, and it rounds to 0 as uint8.
inline __m512 exp2_nonpositive_255(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-120.f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(255.f * 0.0551716685f), f, _mm512_set1_ps(255.f * 0.242611155f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(255.f * 0.693260968f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(255.f * 0.999928057f));
  return _mm512_scalef_ps(p, n);
}

constexpr float kLog2e = 1.44269504f;

struct PackedHead {
  int tokens = 0, keys = 0, groups4 = 0;  // N, Nk, N4 / 4
  std::vector<uint8_t> q;
  std::vector<float> q_scale;
  std::vector<int8_t> k;
  std::vector<int32_t> k_offset;  // -128 x the key's int8 row sum: what Q's +128 offset adds to its scores
  std::vector<float> k_scale;
  std::vector<int8_t> v;
  std::vector<float> v_scale;
};

inline float abs_max_row(const float* x) {
  const __m512 magnitude = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  __m512 m = _mm512_and_ps(_mm512_loadu_ps(x), magnitude);
  for (int c = 16; c < kD; c += 16) m = _mm512_max_ps(m, _mm512_and_ps(_mm512_loadu_ps(x + c), magnitude));
  return _mm512_reduce_max_ps(m);
}

// A token's 64 values times `inverse`, rounded to nearest even, as 4 vectors of int32 in [-127, 127].
inline void round_row(const float* x, __m512 inverse, __m512i out[4]) {
  for (int c = 0; c < 4; ++c) out[c] = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * c), inverse));
}

// q, k, v: a head's first token row; row n starts `token_stride` floats after row n - 1.
void pack_head(const float* q, const float* k, const float* v, std::ptrdiff_t token_stride, int tokens, float scale,
               PackedHead& p) {
  p.tokens = tokens;
  p.keys = (tokens + kKeysPerTile - 1) / kKeysPerTile * kKeysPerTile;
  p.groups4 = (tokens + 3) / 4;
  const int query_rows = (tokens + kRows - 1) / kRows * kRows;
  p.q.assign(size_t(query_rows) * kD, 128);
  p.q_scale.assign(query_rows, 0.f);
  p.k.assign(size_t(p.keys) * kD, 0);
  p.k_offset.assign(p.keys, 0);
  p.k_scale.assign(p.keys, 0.f);
  p.v.assign(size_t(p.groups4) * 4 * kD, 0);
  p.v_scale.assign(kD, 1.f);
  __m512i rounded[4];
  for (int i = 0; i < tokens; ++i) {
    const float* row = q + i * token_stride;
    const float m = abs_max_row(row), step = m > 0 ? m / 127.f : 1.f;
    p.q_scale[i] = step * scale;
    round_row(row, _mm512_set1_ps(1.f / step), rounded);
    for (int c = 0; c < 4; ++c)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p.q.data() + size_t(i) * kD + 16 * c),
                       _mm512_cvtusepi32_epi8(_mm512_add_epi32(rounded[c], _mm512_set1_epi32(128))));
  }
  alignas(64) int8_t key[kD];
  int32_t* k_words = reinterpret_cast<int32_t*>(p.k.data());
  for (int j = 0; j < tokens; ++j) {
    const float* row = k + j * token_stride;
    const float m = abs_max_row(row), step = m > 0 ? m / 127.f : 1.f;
    p.k_scale[j] = step;
    round_row(row, _mm512_set1_ps(1.f / step), rounded);
    const __m512i sum = _mm512_add_epi32(_mm512_add_epi32(rounded[0], rounded[1]),
                                         _mm512_add_epi32(rounded[2], rounded[3]));
    p.k_offset[j] = -128 * _mm512_reduce_add_epi32(sum);
    for (int c = 0; c < 4; ++c)
      _mm_store_si128(reinterpret_cast<__m128i*>(key + 16 * c), _mm512_cvtsepi32_epi8(rounded[c]));
    const int32_t* key_words = reinterpret_cast<const int32_t*>(key);
    int32_t* tile = k_words + size_t(j / 16) * 16 * kGroups + j % 16;
    for (int g = 0; g < kGroups; ++g) tile[g * 16] = key_words[g];
  }
  const __m512 magnitude = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  __m512 v_max[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int j = 0; j < tokens; ++j)
    for (int c = 0; c < 4; ++c)
      v_max[c] = _mm512_max_ps(v_max[c], _mm512_and_ps(_mm512_loadu_ps(v + j * token_stride + 16 * c), magnitude));
  __m512 v_inverse[4];
  for (int c = 0; c < 4; ++c) {
    __m512 step = _mm512_div_ps(v_max[c], _mm512_set1_ps(127.f));
    step = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v_max[c], _mm512_setzero_ps(), _CMP_EQ_OQ), step,
                                _mm512_set1_ps(1.f));
    _mm512_storeu_ps(p.v_scale.data() + 16 * c, step);
    v_inverse[c] = _mm512_div_ps(_mm512_set1_ps(1.f), step);
  }
  // Each channel's dword holds the four tokens' bytes of a group side by side: dpbusd sums the four.
  for (int group = 0; group < p.groups4; ++group)
    for (int c = 0; c < 4; ++c) {
      __m512i word = _mm512_setzero_si512();
      for (int t = 0; t < 4 && group * 4 + t < tokens; ++t) {
        __m512i x = _mm512_cvtps_epi32(
            _mm512_mul_ps(_mm512_loadu_ps(v + (group * 4 + t) * token_stride + 16 * c), v_inverse[c]));
        x = _mm512_max_epi32(_mm512_min_epi32(x, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
        word = _mm512_or_si512(word, _mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0xff)), 8 * t));
      }
      _mm512_storeu_si512(p.v.data() + (size_t(group) * kD + 16 * c) * 4, word);
    }
}

// The micro-kernels keep their 24 accumulators in named variables: GCC spills an array of them to the stack
// (the first version, with arrays, ran P V at a third of the speed).
#define MF_DOT(acc, a, b) acc = _mm512_dpbusd_epi32(acc, a, b)
#define MF_BROADCAST(ptr) _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(ptr))
#define MF_ROW(r, b, x0, x1, x2, x3) \
  MF_DOT(a##r##0, b, x0);              \
  MF_DOT(a##r##1, b, x1);              \
  MF_DOT(a##r##2, b, x2);              \
  MF_DOT(a##r##3, b, x3)
// Every row's four accumulators start from z0..z3 (each 16 output columns).
#define MF_ACCUMULATORS(z0, z1, z2, z3)                                                                         \
  __m512i a00 = z0, a01 = z1, a02 = z2, a03 = z3, a10 = z0, a11 = z1, a12 = z2, a13 = z3, a20 = z0, a21 = z1, \
          a22 = z2, a23 = z3, a30 = z0, a31 = z1, a32 = z2, a33 = z3, a40 = z0, a41 = z1, a42 = z2, a43 = z3,  \
          a50 = z0, a51 = z1, a52 = z2, a53 = z3
#define MF_STORE_ROW(r, base, stride)                                    \
  _mm512_storeu_si512((base) + size_t(r) * (stride) + 0, a##r##0);     \
  _mm512_storeu_si512((base) + size_t(r) * (stride) + 16, a##r##1);    \
  _mm512_storeu_si512((base) + size_t(r) * (stride) + 32, a##r##2);    \
  _mm512_storeu_si512((base) + size_t(r) * (stride) + 48, a##r##3)

#define MF_STORE_TILE(base, stride) \
  MF_STORE_ROW(0, base, stride);     \
  MF_STORE_ROW(1, base, stride);     \
  MF_STORE_ROW(2, base, stride);     \
  MF_STORE_ROW(3, base, stride);     \
  MF_STORE_ROW(4, base, stride);     \
  MF_STORE_ROW(5, base, stride)

// Scores of kRows query rows (uint8, row stride q_stride = kD) against 64 keys (4 packed tiles of `groups` = kGroups
// 4-byte groups each): int32 sums, started from the keys' `offsets` (minus what Q's +128 adds), into
// scores[r][0..63] (row stride `stride`). The widths come in as arguments and
// the function is kept out of inlining and constant propagation: with them constant, GCC 12 scheduled the loop so
// that it spilled accumulators to the stack (15.6 against 11.9 ms for 16 heads of 1600 tokens).
__attribute__((noipa)) void scores_tile(const uint8_t* q, int q_stride, const int8_t* k_tiles, int groups,
                                        const int32_t* offsets, int32_t* scores, int stride) {
  const __m512i o0 = _mm512_loadu_si512(offsets), o1 = _mm512_loadu_si512(offsets + 16);
  const __m512i o2 = _mm512_loadu_si512(offsets + 32), o3 = _mm512_loadu_si512(offsets + 48);
  MF_ACCUMULATORS(o0, o1, o2, o3);
  const size_t tile = size_t(groups) * 64;
  for (int g = 0; g < groups; ++g) {
    const int8_t* kg = k_tiles + g * 64;
    const __m512i k0 = _mm512_loadu_si512(kg), k1 = _mm512_loadu_si512(kg + tile);
    const __m512i k2 = _mm512_loadu_si512(kg + 2 * tile), k3 = _mm512_loadu_si512(kg + 3 * tile);
    const uint8_t* qg = q + g * 4;
    __m512i b = MF_BROADCAST(qg);
    MF_ROW(0, b, k0, k1, k2, k3);
    b = MF_BROADCAST(qg + q_stride);
    MF_ROW(1, b, k0, k1, k2, k3);
    b = MF_BROADCAST(qg + 2 * q_stride);
    MF_ROW(2, b, k0, k1, k2, k3);
    b = MF_BROADCAST(qg + 3 * q_stride);
    MF_ROW(3, b, k0, k1, k2, k3);
    b = MF_BROADCAST(qg + 4 * q_stride);
    MF_ROW(4, b, k0, k1, k2, k3);
    b = MF_BROADCAST(qg + 5 * q_stride);
    MF_ROW(5, b, k0, k1, k2, k3);
  }
  MF_STORE_TILE(scores, stride);
}

// P V for kRows uint8 probability rows (row stride `stride`, 4 x groups4 keys) and 64 channels: int32 sums into
// sums[r][0..63].
inline void values_tile(const uint8_t* p, int stride, const int8_t* v, int groups4, int32_t* sums) {
  const __m512i z = _mm512_setzero_si512();
  MF_ACCUMULATORS(z, z, z, z);
  const uint8_t *p0 = p, *p1 = p0 + stride, *p2 = p1 + stride, *p3 = p2 + stride, *p4 = p3 + stride,
                *p5 = p4 + stride;
  for (int group = 0; group < groups4; ++group) {
    const int8_t* vg = v + size_t(group) * 4 * kD;
    const __m512i v0 = _mm512_loadu_si512(vg), v1 = _mm512_loadu_si512(vg + 64);
    const __m512i v2 = _mm512_loadu_si512(vg + 128), v3 = _mm512_loadu_si512(vg + 192);
    const int offset = group * 4;
    __m512i b = MF_BROADCAST(p0 + offset);
    MF_ROW(0, b, v0, v1, v2, v3);
    b = MF_BROADCAST(p1 + offset);
    MF_ROW(1, b, v0, v1, v2, v3);
    b = MF_BROADCAST(p2 + offset);
    MF_ROW(2, b, v0, v1, v2, v3);
    b = MF_BROADCAST(p3 + offset);
    MF_ROW(3, b, v0, v1, v2, v3);
    b = MF_BROADCAST(p4 + offset);
    MF_ROW(4, b, v0, v1, v2, v3);
    b = MF_BROADCAST(p5 + offset);
    MF_ROW(5, b, v0, v1, v2, v3);
  }
  MF_STORE_TILE(sums, kD);
}

#undef MF_DOT
#undef MF_BROADCAST
#undef MF_ROW
#undef MF_ACCUMULATORS
#undef MF_STORE_ROW
#undef MF_STORE_TILE

struct Scratch {
  std::vector<float> scores;         // [kRows][keys], int32 sums, then float scores in place
  std::vector<uint8_t> probability;  // [kRows][groups4 * 4]
};

// Query rows [first, first + rows) of one head (rows <= kRows) into out: row n at out + n * out_stride floats.
void row_block(const PackedHead& p, int first, int rows, float* out, std::ptrdiff_t out_stride, Scratch& scratch) {
  const int stride = p.keys, p_stride = p.groups4 * 4;
  int32_t* sums = reinterpret_cast<int32_t*>(scratch.scores.data());
  for (int key = 0; key < p.keys; key += kKeysPerTile)
    scores_tile(p.q.data() + size_t(first) * kD, kD, p.k.data() + size_t(key) * kD, kGroups,
                p.k_offset.data() + key, sums + key, stride);
  float normaliser[kRows];
  for (int r = 0; r < kRows; ++r) {
    uint8_t* probability = scratch.probability.data() + size_t(r) * p_stride;
    if (r >= rows) {  // padding rows of the last block: P = 0, nothing stored
      std::memset(probability, 0, p_stride);
      continue;
    }
    int32_t* row_sums = sums + size_t(r) * stride;
    float* row = scratch.scores.data() + size_t(r) * stride;
    const __m512 q_scale = _mm512_set1_ps(p.q_scale[first + r] * kLog2e);  // scores in base 2
    __m512 maximum = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < p.keys; j += 16) {
      __m512 s = _mm512_cvtepi32_ps(_mm512_loadu_si512(row_sums + j));
      s = _mm512_mul_ps(_mm512_mul_ps(s, _mm512_loadu_ps(p.k_scale.data() + j)), q_scale);
      if (j + 16 > p.tokens) {  // padding keys take no weight
        const int valid = std::max(p.tokens - j, 0);
        s = _mm512_mask_blend_ps(__mmask16(0xffffu << valid), s, _mm512_set1_ps(-INFINITY));
      }
      _mm512_storeu_ps(row + j, s);
      maximum = _mm512_max_ps(maximum, s);
    }
    const __m512 row_max = _mm512_set1_ps(_mm512_reduce_max_ps(maximum));
    __m512 total = _mm512_setzero_ps();
    for (int j = 0; j < p_stride; j += 16) {
      const __m512 e = exp2_nonpositive_255(_mm512_sub_ps(_mm512_loadu_ps(row + j), row_max));
      total = _mm512_add_ps(total, e);
      const __m128i bytes = _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(e));
      const int left = p_stride - j;
      if (left >= 16) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(probability + j), bytes);
      } else {
        _mm_mask_storeu_epi8(probability + j, __mmask16((1u << left) - 1), bytes);
      }
    }
    // P_j = e_j / sum(e), stored as round(255 e_j) with the 255 inside e: the output divides by sum(e) in float.
    normaliser[r] = 1.f / _mm512_reduce_add_ps(total);
  }
  alignas(64) int32_t out_sums[kRows * kD];
  values_tile(scratch.probability.data(), p_stride, p.v.data(), p.groups4, out_sums);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < kD; c += 16) {
      const __m512 scale = _mm512_mul_ps(_mm512_loadu_ps(p.v_scale.data() + c), _mm512_set1_ps(normaliser[r]));
      _mm512_storeu_ps(out + (first + r) * out_stride + c,
                       _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(out_sums + r * kD + c)), scale));
    }
}

}  // namespace

HeadLayout heads_first_layout(int heads, int tokens) {
  return {std::ptrdiff_t(heads) * tokens * kD, std::ptrdiff_t(tokens) * kD, kD};
}

HeadLayout tokens_first_layout(int heads, int tokens) {
  return {std::ptrdiff_t(tokens) * heads * kD, kD, std::ptrdiff_t(heads) * kD};
}

HeadLayout packed_qkv_layout(int heads, int tokens) {
  return {std::ptrdiff_t(tokens) * 3 * heads * kD, kD, std::ptrdiff_t(3) * heads * kD};
}

void int8_attention(const float* q, const float* k, const float* v, const HeadLayout& in, float* out,
                    const HeadLayout& out_layout, int batches, int heads, int tokens, float scale,
                    const ParallelFor& parallel_for) {
  if (batches < 1 || heads < 1 || tokens < 1) throw std::invalid_argument("int8_attention: no heads or no tokens");
  const int all_heads = batches * heads;
  auto start = [heads](const HeadLayout& layout, int index) {
    return (index / heads) * layout.batch + (index % heads) * layout.head;
  };
  std::vector<PackedHead> packed(all_heads);
  parallel_for(all_heads, [&](int index) {
    const std::ptrdiff_t offset = start(in, index);
    pack_head(q + offset, k + offset, v + offset, in.token, tokens, scale, packed[index]);
  });
  const int blocks = (tokens + kRows - 1) / kRows;
  const int tasks_per_head = (blocks + kBlocksPerTask - 1) / kBlocksPerTask;
  parallel_for(all_heads * tasks_per_head, [&](int task) {
    thread_local Scratch scratch;
    const int index = task / tasks_per_head;
    const PackedHead& p = packed[index];
    scratch.scores.resize(size_t(kRows) * p.keys);
    scratch.probability.resize(size_t(kRows) * p.groups4 * 4);
    const int first_block = (task % tasks_per_head) * kBlocksPerTask;
    const int last_block = std::min(blocks, first_block + kBlocksPerTask);
    for (int block = first_block; block < last_block; ++block) {
      const int first = block * kRows;
      row_block(p, first, std::min(kRows, tokens - first), out + start(out_layout, index), out_layout.token,
                scratch);
    }
  });
}

bool cpu_has_avx512_vnni() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vnni");
}

}  // namespace maefuse
