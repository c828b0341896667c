// CUDA kernels for device frames; each mirrors a host function (named in its comment) and shares its arithmetic
// (runtime/src/pixel_math.hpp), so both paths give the same grey levels (built with -fmad=false: no contraction).
#include "kernels.h"
#include "../runtime/src/pixel_math.hpp"

#include <cuda_runtime.h>

namespace maefuse::detail {

namespace {

constexpr int kBlock = 16;
constexpr int kBins = 65536;
constexpr int kScanThreads = 1024;  // gain16: one block, each thread owns kBins / kScanThreads bins
constexpr int kBinsPerThread = kBins / kScanThreads;

dim3 grid_for(int w, int h) { return dim3((w + kBlock - 1) / kBlock, (h + kBlock - 1) / kBlock); }

__global__ void copy_grey8(const unsigned char* src, size_t stride, int w, int h, unsigned char* dst) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x < w && y < h) dst[static_cast<size_t>(y) * w + x] = src[y * stride + x];
}

__global__ void histogram16(const unsigned char* src, size_t stride, int w, int h, unsigned int* bins) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x < w && y < h) atomicAdd(&bins[px::load_u16le(src + y * stride + 2 * static_cast<size_t>(x))], 1u);
}

// host_frames.cpp percentile() for the 0.5th and 99.5th percentiles, as one block: each thread sums its run of
// bins, a block-wide exclusive scan gives every run's first rank, and the thread whose run holds a wanted rank walks
// its bins to the value. Four ranks: below and below + 1 of each percentile.
__global__ void gain16(const unsigned int* bins, size_t count, float* gain) {
    __shared__ unsigned long long prefix[kScanThreads];
    __shared__ double value[4];
    const int t = threadIdx.x;
    const unsigned int* run = bins + static_cast<size_t>(t) * kBinsPerThread;
    unsigned long long sum = 0;
    for (int i = 0; i < kBinsPerThread; ++i) sum += run[i];
    prefix[t] = sum;
    __syncthreads();
    for (int offset = 1; offset < kScanThreads; offset <<= 1) {  // Hillis-Steele inclusive scan
        const unsigned long long add = t >= offset ? prefix[t - offset] : 0;
        __syncthreads();
        prefix[t] += add;
        __syncthreads();
    }
    const unsigned long long first = prefix[t] - sum;  // ranks [first, prefix[t]) lie in this thread's run
    size_t below[2];
    double frac[2];
    px::percentile_position(0.5, count, &below[0], &frac[0]);
    px::percentile_position(99.5, count, &below[1], &frac[1]);
    const size_t ranks[4] = {below[0], below[0] + 1 < count ? below[0] + 1 : below[0], below[1],
                             below[1] + 1 < count ? below[1] + 1 : below[1]};
    if (t == kScanThreads - 1)
        for (double& v : value) v = 65535.0;  // a rank past every bin (cannot happen for rank < count)
    __syncthreads();
    for (int k = 0; k < 4; ++k) {
        if (ranks[k] < first || ranks[k] >= prefix[t]) continue;
        unsigned long long seen = first;
        for (int i = 0; i < kBinsPerThread; ++i) {
            seen += run[i];
            if (seen > ranks[k]) {
                value[k] = static_cast<double>(t * kBinsPerThread + i);
                break;
            }
        }
    }
    __syncthreads();
    if (t == 0) {
        const double low = value[0] + frac[0] * (value[1] - value[0]);
        const double high = value[2] + frac[1] * (value[3] - value[2]);
        px::gain_from_percentiles(low, high, &gain[0], &gain[1]);
    }
}

// host_frames.cpp ir_to_grey8 (GRAY16 branch).
__global__ void stretch16(const unsigned char* src, size_t stride, int w, int h, const float* gain, unsigned char* dst) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    dst[static_cast<size_t>(y) * w + x] =
        px::stretch16(px::load_u16le(src + y * stride + 2 * static_cast<size_t>(x)), gain[0], gain[1]);
}

struct Matrix {
    double m[9];
};

// registration.cpp warp_grey.
__global__ void warp(const unsigned char* ir, int iw, int ih, Matrix vis_to_ir, int w, int h, unsigned char* out) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    out[static_cast<size_t>(y) * w + x] = px::warp_pixel(vis_to_ir.m, x, y, ir, iw, ih);
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
            px::nv12_to_bgr(row[x], c[0], c[1], o);
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
        case MAEFUSE_FORMAT_GRAY8: row[x] = px::bgr_to_grey(s); break;
    }
}

size_t stride_or_packed(size_t stride, maefuse_format format, int width) {
    return stride ? stride : static_cast<size_t>(width) * bytes_per_pixel(format);
}

cudaError_t grow(DeviceScratch& s, size_t grey) {
    cudaError_t status = cudaSuccess;
    if (grey > s.grey_capacity) {
        cudaFree(s.ir_grey);
        s.ir_grey = nullptr;
        s.grey_capacity = 0;
        if ((status = cudaMalloc(&s.ir_grey, grey)) != cudaSuccess) return status;
        s.grey_capacity = grey;
    }
    if (!s.histogram) {
        if ((status = cudaMalloc(&s.histogram, kBins * sizeof(unsigned int))) != cudaSuccess) return status;
        if ((status = cudaMalloc(&s.gain, 2 * sizeof(float))) != cudaSuccess) return status;
    }
    return status;
}

}  // namespace

void DeviceScratch::release() {
    for (void* p : {static_cast<void*>(ir_grey), static_cast<void*>(histogram), static_cast<void*>(gain)}) cudaFree(p);
    ir_grey = nullptr;
    histogram = nullptr;
    gain = nullptr;
    grey_capacity = 0;
}

void check_cuda(int status, const char* what) {
    const auto error = static_cast<cudaError_t>(status);
    if (error != cudaSuccess)
        fail(MAEFUSE_ERROR_CUDA, std::string(what) + ": " + cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")");
}

bool is_legacy_default_stream(const void* stream) { return stream == nullptr || stream == cudaStreamLegacy; }

int prepare_device_pair(const maefuse_frame& ir, const maefuse_frame& vis, const Registration* registration, int w,
                        int h, DeviceScratch& s, uint8_t* ir_model, uint8_t* vis_out, void* stream_handle) {
    auto stream = static_cast<cudaStream_t>(stream_handle);
    const size_t ir_pixels = static_cast<size_t>(ir.width) * ir.height;
    cudaError_t status = grow(s, registration ? ir_pixels : 0);
    if (status != cudaSuccess) return status;
    const auto* ir_src = static_cast<const unsigned char*>(ir.data);
    const size_t ir_stride = stride_or_packed(ir.stride, ir.format, ir.width);
    unsigned char* ir_grey = registration ? s.ir_grey : ir_model;
    const dim3 block(kBlock, kBlock);
    if (ir.format == MAEFUSE_FORMAT_GRAY16) {
        if ((status = cudaMemsetAsync(s.histogram, 0, kBins * sizeof(unsigned int), stream)) != cudaSuccess) return status;
        histogram16<<<grid_for(ir.width, ir.height), block, 0, stream>>>(ir_src, ir_stride, ir.width, ir.height, s.histogram);
        gain16<<<1, kScanThreads, 0, stream>>>(s.histogram, ir_pixels, s.gain);
        stretch16<<<grid_for(ir.width, ir.height), block, 0, stream>>>(ir_src, ir_stride, ir.width, ir.height, s.gain,
                                                                        ir_grey);
    } else {
        copy_grey8<<<grid_for(ir.width, ir.height), block, 0, stream>>>(ir_src, ir_stride, ir.width, ir.height, ir_grey);
    }
    if (registration) {
        Matrix m;
        for (int i = 0; i < 9; ++i) m.m[i] = registration->vis_to_ir[i];
        warp<<<grid_for(w, h), block, 0, stream>>>(s.ir_grey, ir.width, ir.height, m, w, h, ir_model);
    }
    const auto* vis_src = static_cast<const unsigned char*>(vis.data);
    const size_t vis_stride = stride_or_packed(vis.stride, vis.format, vis.width);
    const auto* uv = vis.uv_data ? static_cast<const unsigned char*>(vis.uv_data) : vis_src + vis_stride * vis.height;
    const size_t uv_stride = vis.uv_data && vis.uv_stride ? vis.uv_stride : vis_stride;
    vis_bgr<<<grid_for(w, h), block, 0, stream>>>(vis_src, vis_stride, uv, uv_stride, vis.format, w, h, vis_out);
    return cudaGetLastError();
}

int write_device_output(const uint8_t* fused, const maefuse_output& out, void* stream_handle) {
    const size_t stride = stride_or_packed(out.stride, out.format, out.width);
    output<<<grid_for(out.width, out.height), dim3(kBlock, kBlock), 0, static_cast<cudaStream_t>(stream_handle)>>>(
        fused, out.format, out.width, out.height, static_cast<unsigned char*>(out.data), stride);
    return cudaGetLastError();
}

}  // namespace maefuse::detail
