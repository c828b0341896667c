// Device-frame processing for maefuse_fuse_device_async: the host path of host_frames.cpp and registration.cpp as
// CUDA kernels (IR 16-bit gain, registration warp, VIS pixel formats, output formats). All work is queued on the
// caller's stream; buffers are per calling thread.
#pragma once

#include "../runtime/src/internal.hpp"

namespace maefuse::detail {

// Per-thread device buffers, grown on demand (tightly packed: grey H*W, BGR H*W*3).
struct DeviceScratch {
    uint8_t* ir_grey = nullptr;   // IR at its own size, 8-bit
    uint8_t* ir_model = nullptr;  // IR at the VIS size (after the warp)
    uint8_t* vis_bgr = nullptr;
    uint8_t* fused = nullptr;
    unsigned int* histogram = nullptr;  // 65536 bins for the 16-bit IR gain
    float* gain = nullptr;              // low, scale
    size_t grey_capacity = 0, frame_capacity = 0;
    ~DeviceScratch();
};

DeviceScratch& device_scratch();

// Throws MAEFUSE_ERROR_CUDA naming `what` unless `status` (a cudaError_t) is cudaSuccess.
void check_cuda(int status, const char* what);

// Device frames -> scratch.ir_model (grey) and scratch.vis_bgr at w x h; returns a cudaError_t.
int prepare_device_pair(const maefuse_frame& ir, const maefuse_frame& vis, const Registration* registration, int w,
                        int h, DeviceScratch& scratch, void* stream);

// scratch.fused (BGR, packed) -> the caller's device output frame in its format and stride; returns a cudaError_t.
int write_device_output(const uint8_t* fused, const maefuse_output& out, void* stream);

}  // namespace maefuse::detail
