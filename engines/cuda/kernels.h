// Device-frame processing for maefuse_fuse_device_async: the host path of host_frames.cpp and registration.cpp as
// CUDA kernels (IR 16-bit gain, registration warp, VIS pixel formats, output formats), sharing its per-pixel
// arithmetic (runtime/src/pixel_math.hpp). Work is queued on the stream given, which the TensorRT backend makes its
// slot's own stream; the scratch belongs to that slot, so it is only used in that stream's order.
#pragma once

#include "../runtime/src/internal.hpp"

namespace maefuse::detail {

// Device buffers of one slot, grown on demand.
struct DeviceScratch {
    uint8_t* ir_grey = nullptr;         // IR at its own size, 8-bit (before the warp)
    unsigned int* histogram = nullptr;  // 65536 bins for the 16-bit IR gain
    float* gain = nullptr;              // offset, scale
    size_t grey_capacity = 0;
    DeviceScratch() = default;
    DeviceScratch(const DeviceScratch&) = delete;
    DeviceScratch& operator=(const DeviceScratch&) = delete;
    // Frees the buffers; the caller has synchronised the stream that used them and made their device current.
    void release();
    ~DeviceScratch() { release(); }
};

// Throws MAEFUSE_ERROR_CUDA naming `what` unless `status` (a cudaError_t) is cudaSuccess.
void check_cuda(int status, const char* what);

// True for the streams a device call refuses: NULL and cudaStreamLegacy. NULL is ambiguous across a library
// boundary (the caller's code may be built with --default-stream per-thread, where NULL names its per-thread
// stream, while this library would read the legacy stream), and the legacy stream serialises with every blocking
// stream of the device. Callers pass a stream of their own or cudaStreamPerThread.
bool is_legacy_default_stream(const void* stream);

// Device frames -> ir_model (w x h grey) and vis_bgr (w x h x 3 BGR), tightly packed; returns a cudaError_t.
int prepare_device_pair(const maefuse_frame& ir, const maefuse_frame& vis, const Registration* registration, int w,
                        int h, DeviceScratch& scratch, uint8_t* ir_model, uint8_t* vis_bgr, void* stream);

// fused (BGR, packed) -> the caller's device output frame in its format and stride; returns a cudaError_t.
int write_device_output(const uint8_t* fused, const maefuse_output& out, void* stream);

}  // namespace maefuse::detail
