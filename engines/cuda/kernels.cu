// CUDA kernels for device frames; each mirrors a host function (named in its comment) so both paths agree.
#include "kernels.h"

#include <cuda_runtime.h>

namespace maefuse::detail {

namespace {

constexpr int kBlock = 16;

dim3 grid_for(int w, int h) { return dim3((w + kBlock - 1) / kBlock, (h + kBlock - 1) / kBlock); }

__device__ unsigned char clamp_u8(float v) { return static_cast<unsigned char>(fminf(255.0f, fmaxf(0.0f, rintf(v)))); }

__global__ void copy_grey8(const unsigned char* src, size_t stride, int w, int h, unsigned char* dst) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x < w && y < h) dst[static_cast<size_t>(y) * w + x] = src[y * stride + x];
}

__global__ void histogram16(const unsigned char* src, size_t stride, int w, int h, unsigned int* bins) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x < w && y < h) atomicAdd(&bins[reinterpret_cast<const unsigned short*>(src + y * stride)[x]], 1u);
}

// host_frames.cpp percentile(): numpy's linear interpolation between ranks, from the histogram (one thread).
__device__ double rank_value(const unsigned int* bins, size_t rank) {
    size_t seen = 0;
    for (int v = 0; v < 65536; ++v) {
        seen += bins[v];
        if (seen > rank) return v;
    }
    return 65535.0;
}

__global__ void gain16(const unsigned int* bins, size_t count, float* gain) {
    double q[2] = {0.5, 99.5}, value[2];
    for (int i = 0; i < 2; ++i) {
        const double position = q[i] / 100.0 * static_cast<double>(count - 1);
        const size_t below = static_cast<size_t>(floor(position));
        const double low = rank_value(bins, below);
        const double high = below + 1 < count ? rank_value(bins, below + 1) : low;
        value[i] = low + (position - below) * (high - low);
    }
    gain[0] = static_cast<float>(value[0]);
    gain[1] = static_cast<float>(255.0 / fmax(value[1] - value[0], 1.0));
}

// host_frames.cpp ir_to_grey8 (GRAY16 branch).
__global__ void stretch16(const unsigned char* src, size_t stride, int w, int h, const float* gain, unsigned char* dst) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    const float v = (static_cast<float>(reinterpret_cast<const unsigned short*>(src + y * stride)[x]) - gain[0]) * gain[1] + 0.5f;
    dst[static_cast<size_t>(y) * w + x] = static_cast<unsigned char>(fminf(255.0f, fmaxf(0.0f, v)));
}

struct Matrix {
    double m[9];
};

// registration.cpp warp_grey: bilinear, 0 outside the IR frame.
__global__ void warp(const unsigned char* ir, int iw, int ih, Matrix vis_to_ir, int w, int h, unsigned char* out) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    const double* m = vis_to_ir.m;
    const double d = m[6] * x + m[7] * y + m[8];
    const double sx = (m[0] * x + m[1] * y + m[2]) / d, sy = (m[3] * x + m[4] * y + m[5]) / d;
    const double fx = floor(sx), fy = floor(sy);
    const int x0 = static_cast<int>(fx), y0 = static_cast<int>(fy);
    const float ax = static_cast<float>(sx - fx), ay = static_cast<float>(sy - fy);
    auto at = [&](int xx, int yy) -> float {
        return (xx >= 0 && yy >= 0 && xx < iw && yy < ih) ? ir[static_cast<size_t>(yy) * iw + xx] : 0.0f;
    };
    float value = 0.0f;
    if (isfinite(sx) && isfinite(sy) && x0 >= -1 && y0 >= -1 && x0 < iw && y0 < ih)
        value = (1 - ay) * ((1 - ax) * at(x0, y0) + ax * at(x0 + 1, y0)) + ay * ((1 - ax) * at(x0, y0 + 1) + ax * at(x0 + 1, y0 + 1));
    out[static_cast<size_t>(y) * w + x] = static_cast<unsigned char>(lrintf(value));
}

// host_frames.cpp vis_to_bgr.
__global__ void vis_bgr(const unsigned char* src, size_t stride, const unsigned char* uv, size_t uv_stride, int format,
                        int w, int h, unsigned char* dst) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    const unsigned char* row = src + y * stride;
    unsigned char* o = dst + (static_cast<size_t>(y) * w + x) * 3;
    switch (format) {
        case MAEFUSE_FORMAT_BGR: o[0] = row[3 * x]; o[1] = row[3 * x + 1]; o[2] = row[3 * x + 2]; break;
        case MAEFUSE_FORMAT_BGRX: o[0] = row[4 * x]; o[1] = row[4 * x + 1]; o[2] = row[4 * x + 2]; break;
        case MAEFUSE_FORMAT_RGB: o[0] = row[3 * x + 2]; o[1] = row[3 * x + 1]; o[2] = row[3 * x]; break;
        case MAEFUSE_FORMAT_GRAY8: o[0] = o[1] = o[2] = row[x]; break;
        case MAEFUSE_FORMAT_NV12: {
            const unsigned char* c = uv + (y / 2) * uv_stride + (x / 2) * 2;
            const float luma = 1.164f * (row[x] - 16.0f), u = c[0] - 128.0f, v = c[1] - 128.0f;
            o[0] = clamp_u8(luma + 2.018f * u);
            o[1] = clamp_u8(luma - 0.391f * u - 0.813f * v);
            o[2] = clamp_u8(luma + 1.596f * v);
            break;
        }
    }
}

// host_frames.cpp write_output.
__global__ void output(const unsigned char* bgr, int format, int w, int h, unsigned char* dst, size_t stride) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    const unsigned char* s = bgr + (static_cast<size_t>(y) * w + x) * 3;
    unsigned char* row = dst + y * stride;
    switch (format) {
        case MAEFUSE_FORMAT_BGR: row[3 * x] = s[0]; row[3 * x + 1] = s[1]; row[3 * x + 2] = s[2]; break;
        case MAEFUSE_FORMAT_BGRX: row[4 * x] = s[0]; row[4 * x + 1] = s[1]; row[4 * x + 2] = s[2]; row[4 * x + 3] = 255; break;
        case MAEFUSE_FORMAT_RGB: row[3 * x] = s[2]; row[3 * x + 1] = s[1]; row[3 * x + 2] = s[0]; break;
        case MAEFUSE_FORMAT_GRAY8: row[x] = clamp_u8(0.114f * s[0] + 0.587f * s[1] + 0.299f * s[2]); break;
    }
}

size_t stride_or_packed(size_t stride, maefuse_format format, int width) {
    return stride ? stride : static_cast<size_t>(width) * bytes_per_pixel(format);
}

cudaError_t grow(DeviceScratch& s, size_t grey, size_t frame) {
    cudaError_t status = cudaSuccess;
    if (grey > s.grey_capacity) {
        cudaFree(s.ir_grey);
        cudaFree(s.ir_model);
        s.ir_grey = s.ir_model = nullptr;
        s.grey_capacity = 0;
        if ((status = cudaMalloc(&s.ir_grey, grey)) != cudaSuccess) return status;
        if ((status = cudaMalloc(&s.ir_model, grey)) != cudaSuccess) return status;
        s.grey_capacity = grey;
    }
    if (frame > s.frame_capacity) {
        cudaFree(s.vis_bgr);
        cudaFree(s.fused);
        s.vis_bgr = s.fused = nullptr;
        s.frame_capacity = 0;
        if ((status = cudaMalloc(&s.vis_bgr, frame)) != cudaSuccess) return status;
        if ((status = cudaMalloc(&s.fused, frame)) != cudaSuccess) return status;
        s.frame_capacity = frame;
    }
    if (!s.histogram) {
        if ((status = cudaMalloc(&s.histogram, 65536 * sizeof(unsigned int))) != cudaSuccess) return status;
        if ((status = cudaMalloc(&s.gain, 2 * sizeof(float))) != cudaSuccess) return status;
    }
    return status;
}

}  // namespace

DeviceScratch::~DeviceScratch() {
    for (void* p : {static_cast<void*>(ir_grey), static_cast<void*>(ir_model), static_cast<void*>(vis_bgr),
                    static_cast<void*>(fused), static_cast<void*>(histogram), static_cast<void*>(gain)})
        cudaFree(p);
}

DeviceScratch& device_scratch() {
    thread_local DeviceScratch scratch;
    return scratch;
}

void check_cuda(int status, const char* what) {
    const auto error = static_cast<cudaError_t>(status);
    if (error != cudaSuccess)
        fail(MAEFUSE_ERROR_CUDA, std::string(what) + ": " + cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")");
}

int prepare_device_pair(const maefuse_frame& ir, const maefuse_frame& vis, const Registration* registration, int w,
                        int h, DeviceScratch& s, void* stream_handle) {
    auto stream = static_cast<cudaStream_t>(stream_handle);
    const size_t ir_pixels = static_cast<size_t>(ir.width) * ir.height;
    cudaError_t status = grow(s, std::max(ir_pixels, static_cast<size_t>(w) * h), static_cast<size_t>(w) * h * 3);
    if (status != cudaSuccess) return status;
    const auto* ir_src = static_cast<const unsigned char*>(ir.data);
    const size_t ir_stride = stride_or_packed(ir.stride, ir.format, ir.width);
    const dim3 block(kBlock, kBlock);
    if (ir.format == MAEFUSE_FORMAT_GRAY16) {
        if ((status = cudaMemsetAsync(s.histogram, 0, 65536 * sizeof(unsigned int), stream)) != cudaSuccess) return status;
        histogram16<<<grid_for(ir.width, ir.height), block, 0, stream>>>(ir_src, ir_stride, ir.width, ir.height, s.histogram);
        gain16<<<1, 1, 0, stream>>>(s.histogram, ir_pixels, s.gain);
        stretch16<<<grid_for(ir.width, ir.height), block, 0, stream>>>(ir_src, ir_stride, ir.width, ir.height, s.gain,
                                                                        registration ? s.ir_grey : s.ir_model);
    } else {
        copy_grey8<<<grid_for(ir.width, ir.height), block, 0, stream>>>(ir_src, ir_stride, ir.width, ir.height,
                                                                         registration ? s.ir_grey : s.ir_model);
    }
    if (registration) {
        Matrix m;
        for (int i = 0; i < 9; ++i) m.m[i] = registration->vis_to_ir[i];
        warp<<<grid_for(w, h), block, 0, stream>>>(s.ir_grey, ir.width, ir.height, m, w, h, s.ir_model);
    }
    const auto* vis_src = static_cast<const unsigned char*>(vis.data);
    const size_t vis_stride = stride_or_packed(vis.stride, vis.format, vis.width);
    const auto* uv = vis.uv_data ? static_cast<const unsigned char*>(vis.uv_data) : vis_src + vis_stride * vis.height;
    const size_t uv_stride = vis.uv_data && vis.uv_stride ? vis.uv_stride : vis_stride;
    vis_bgr<<<grid_for(w, h), block, 0, stream>>>(vis_src, vis_stride, uv, uv_stride, vis.format, w, h, s.vis_bgr);
    return cudaGetLastError();
}

int write_device_output(const uint8_t* fused, const maefuse_output& out, void* stream_handle) {
    const size_t stride = stride_or_packed(out.stride, out.format, out.width);
    output<<<grid_for(out.width, out.height), dim3(kBlock, kBlock), 0, static_cast<cudaStream_t>(stream_handle)>>>(
        fused, out.format, out.width, out.height, static_cast<unsigned char*>(out.data), stride);
    return cudaGetLastError();
}

}  // namespace maefuse::detail
