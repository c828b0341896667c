// Per-pixel arithmetic shared by the host path (host_frames.cpp, registration.cpp) and the CUDA kernels
// (cuda/kernels.cu): one definition, compiled by both compilers, so a device frame and a host frame give the same
// grey levels. Both sides are built without floating-point contraction (-ffp-contract=off, nvcc -fmad=false, see
// engines/CMakeLists.txt): a fused multiply-add rounds once where a*b + c rounds twice, which moves results by 1.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define MAEFUSE_HD __host__ __device__ inline
#else
#define MAEFUSE_HD inline
#endif

namespace maefuse::detail::px {

// The one rounding rule of every float -> uint8 conversion: clamp to [0, 255], then round half up (floor(v + 0.5),
// half away from zero for these non-negative values). NaN maps to 0 (fmaxf returns the number).
MAEFUSE_HD uint8_t round_u8(float v) {
    const float clamped = fminf(255.0f, fmaxf(0.0f, v));
    return static_cast<uint8_t>(floorf(clamped + 0.5f));
}

// A little-endian 16-bit sample at byte address `p`: two byte loads, so any address (an odd stride or offset) is
// safe; a load through `unsigned short*` at an odd address is a misaligned access that kills the CUDA context.
MAEFUSE_HD uint16_t load_u16le(const uint8_t* p) {
    return static_cast<uint16_t>(p[0] | (static_cast<unsigned>(p[1]) << 8));
}

// The 16-bit IR stretch: (v - low) * scale, truncated after +0.5 and clamped (processing.ir_to_grey8).
MAEFUSE_HD uint8_t stretch16(uint16_t v, float low, float scale) {
    const float s = (static_cast<float>(v) - low) * scale + 0.5f;
    return static_cast<uint8_t>(fminf(255.0f, fmaxf(0.0f, s)));
}

// numpy.percentile's linear interpolation: rank below `q` and the fraction towards the next rank.
MAEFUSE_HD void percentile_position(double q, size_t count, size_t* below, double* frac) {
    const double position = q / 100.0 * static_cast<double>(count - 1);
    *below = static_cast<size_t>(floor(position));
    *frac = position - static_cast<double>(*below);
}

// Low and high percentiles -> the stretch's offset and scale.
MAEFUSE_HD void gain_from_percentiles(double low, double high, float* offset, float* scale) {
    *offset = static_cast<float>(low);
    *scale = static_cast<float>(255.0 / fmax(high - low, 1.0));
}

// BT.601 limited-range NV12 (Y, U, V bytes) -> B, G, R.
MAEFUSE_HD void nv12_to_bgr(uint8_t y, uint8_t u8, uint8_t v8, uint8_t* bgr) {
    const float luma = 1.164f * (static_cast<float>(y) - 16.0f);
    const float u = static_cast<float>(u8) - 128.0f, v = static_cast<float>(v8) - 128.0f;
    bgr[0] = round_u8(luma + 2.018f * u);
    bgr[1] = round_u8(luma - 0.391f * u - 0.813f * v);
    bgr[2] = round_u8(luma + 1.596f * v);
}

// OpenCV's BGR2GRAY weights.
MAEFUSE_HD uint8_t bgr_to_grey(const uint8_t* bgr) {
    return round_u8(0.114f * bgr[0] + 0.587f * bgr[1] + 0.299f * bgr[2]);
}

MAEFUSE_HD float grey_at(const uint8_t* ir, int iw, int ih, int x, int y) {
    return (x >= 0 && y >= 0 && x < iw && y < ih) ? ir[static_cast<size_t>(y) * iw + x] : 0.0f;
}

// The registration warp at VIS pixel (x, y): the homography `vis_to_ir` (row-major 3x3) gives the IR position,
// sampled bilinearly; neighbours outside the (iw, ih) IR frame count as 0 (OpenCV's BORDER_CONSTANT, value 0).
MAEFUSE_HD uint8_t warp_pixel(const double* m, int x, int y, const uint8_t* ir, int iw, int ih) {
    const double d = m[6] * x + m[7] * y + m[8];
    const double sx = (m[0] * x + m[1] * y + m[2]) / d, sy = (m[3] * x + m[4] * y + m[5]) / d;
    if (!isfinite(sx) || !isfinite(sy)) return 0;
    const double fx = floor(sx), fy = floor(sy);
    if (fx < -1.0 || fy < -1.0 || fx >= iw || fy >= ih) return 0;
    const int x0 = static_cast<int>(fx), y0 = static_cast<int>(fy);
    const float ax = static_cast<float>(sx - fx), ay = static_cast<float>(sy - fy);
    const float value = (1 - ay) * ((1 - ax) * grey_at(ir, iw, ih, x0, y0) + ax * grey_at(ir, iw, ih, x0 + 1, y0)) +
                        ay * ((1 - ax) * grey_at(ir, iw, ih, x0, y0 + 1) + ax * grey_at(ir, iw, ih, x0 + 1, y0 + 1));
    return round_u8(value);
}

}  // namespace maefuse::detail::px
