// Softmax attention with both products on the CPU's int8 dot-product units (AVX-512 VNNI), for OpenVINO's CPU
// plugin (openvino_extension.cpp) and its C++ test (engines/tests). Built by maefuse_deploy/backends/
// openvino_attention.py with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni: call it only where
// cpu_has_avx512_vnni() holds.
#pragma once

#include <functional>

namespace maefuse {

// The head width the kernel is written for: ViT-L/16's 1024 channels over 16 heads (maefuse-l640's encoder and
// fusion layer, maefuse-tiny's encoder).
constexpr int kInt8AttentionHeadDim = 64;

// Runs body(0) .. body(count - 1), in any order, on any threads; returns when all have run.
using ParallelFor = std::function<void(int count, const std::function<void(int)>& body)>;

// out = softmax(scale * Q K^T) V for `heads` independent heads.
// q, k, v, out: [heads][tokens][64] float32, row-major (NCHW-like [B*H, N, D] with the batch and head axes
// merged); out must not alias q, k or v.
// Numerics: Q and K are quantized per token (symmetric, int8; Q offset to uint8 with K's row sums as the
// compensation), the scores and the softmax are float32, each probability row is quantized to uint8 by its own
// maximum (P_j / P_max = exp(s_j - max), so a row's largest weight is 255 and no calibrated range can clip it),
// and V per channel (symmetric int8 over the tokens). Sums are int32: 1600 tokens x 255 x 127 fits.
void int8_attention(const float* q, const float* k, const float* v, float* out, int heads, int tokens, float scale,
                    const ParallelFor& parallel_for);

// Whether this CPU runs the kernel's instructions (AVX-512 F, BW, DQ, VL and VNNI).
bool cpu_has_avx512_vnni();

}  // namespace maefuse
