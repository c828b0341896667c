// Softmax attention with both products on the CPU's int8 dot-product units (AVX-512 VNNI), for OpenVINO's CPU
// plugin (openvino_extension.cpp) and its C++ test (engines/tests). Built by maefuse_deploy/backends/
// openvino_attention.py with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni: call it only where
// cpu_has_avx512_vnni() holds.
#pragma once

#include <cstddef>
#include <functional>

namespace maefuse {

// The head width the kernel is written for: ViT-L/16's 1024 channels over 16 heads (maefuse-l640's encoder and
// fusion layer, maefuse-tiny's encoder).
constexpr int kInt8AttentionHeadDim = 64;

// Runs body(0) .. body(count - 1), in any order, on any threads; returns when all have run.
using ParallelFor = std::function<void(int count, const std::function<void(int)>& body)>;

// Where one head's token rows lie in a tensor, in floats: row n of head h of batch b starts at
// b * batch + h * head + n * token from the tensor's start (plus the offset of Q, K or V in a packed tensor); each
// row is the head's 64 channels, contiguous.
struct HeadLayout {
  std::ptrdiff_t batch, head, token;
};
// [B][H][N][64]: what ScaledDotProductAttention takes and gives (heads first).
HeadLayout heads_first_layout(int heads, int tokens);
// [B][N][H][64]: what the output projection reads, once the heads are merged back (tokens first).
HeadLayout tokens_first_layout(int heads, int tokens);
// [B][N][3][H][64]: the qkv projection's output as it is, Q, K and V 0, H x 64 and 2 x H x 64 floats from its start.
HeadLayout packed_qkv_layout(int heads, int tokens);

// out = softmax(scale * Q K^T) V for `batches` x `heads` independent heads of `tokens` tokens, float32. q, k and v
// share the layout `in`, out has `out_layout`; out must not overlap q, k or v. Reading Q, K and V where the qkv
// projection wrote them, and writing where the output projection reads, spares the graph its transposes
// (openvino_extension.cpp).
// Numerics: Q and K are quantized per token (symmetric, int8; Q offset to uint8 with K's row sums as the
// compensation), the scores and the softmax are float32, each probability row is quantized to uint8 by its own
// maximum (P_j / P_max = exp(s_j - max), so a row's largest weight is 255 and no calibrated range can clip it),
// and V per channel (symmetric int8 over the tokens). Sums are int32: 1600 tokens x 255 x 127 fits.
void int8_attention(const float* q, const float* k, const float* v, const HeadLayout& in, float* out,
                    const HeadLayout& out_layout, int batches, int heads, int tokens, float scale,
                    const ParallelFor& parallel_for);

// Whether this CPU runs the kernel's instructions (AVX-512 F, BW, DQ, VL and VNNI).
bool cpu_has_avx512_vnni();

}  // namespace maefuse
