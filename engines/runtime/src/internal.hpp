// Internal interfaces of the maefuse runtime library (not installed).
#pragma once

#include <maefuse/maefuse.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace maefuse::detail {

// Thrown inside the library and turned into a status + message at the C API boundary.
class Failure : public std::runtime_error {
public:
    Failure(maefuse_status status, const std::string& message) : std::runtime_error(message), status(status) {}
    maefuse_status status;
};

[[noreturn]] inline void fail(maefuse_status status, const std::string& message) { throw Failure(status, message); }

const char* format_name(maefuse_format format);
int bytes_per_pixel(maefuse_format format);  // NV12: 1 (the Y plane)

// --- host processing (host_frames.cpp). Buffers are tightly packed, row-major. ---------------------------------
// IR frame (GRAY8 / GRAY16) -> (H, W) uint8 grey; 16-bit frames by the percentile stretch in maefuse.h.
void ir_to_grey8(const maefuse_frame& ir, std::vector<uint8_t>& grey);
// VIS frame (BGR / BGRX / RGB / GRAY8 / NV12) -> (H, W, 3) uint8 BGR.
void vis_to_bgr(const maefuse_frame& vis, std::vector<uint8_t>& bgr);
// (H, W, 3) uint8 BGR -> the caller's output frame in its format and stride.
void write_output(const uint8_t* bgr, maefuse_output& out);
// Checks a frame's pointer, size and stride; `role` names it in messages.
void check_frame(const maefuse_frame* frame, const char* role, bool ir);
void check_output(const maefuse_output* out);

// --- registration (registration.cpp) ----------------------------------------------------------------------------
struct Registration {
    double ir_to_vis[9];  // row-major 3x3, IR pixel -> VIS pixel (pixel centres at integers)
    double vis_to_ir[9];  // its inverse: what the warp samples with
    int ir_width, ir_height, vis_width, vis_height;
};
Registration load_registration(const std::string& path);
Registration make_registration(const double ir_to_vis[9], int ir_width, int ir_height, int vis_width,
                               int vis_height);
// (ir_height, ir_width) grey -> (vis_height, vis_width) grey in VIS geometry; bilinear, 0 outside the IR frame.
void warp_grey(const Registration& registration, const uint8_t* ir, uint8_t* out);

// --- device frames (cuda/kernels.h; CUDA builds) ------------------------------------------------------------------
struct DeviceScratch;  // per-slot device buffers of the frame processing (histogram, gain, IR before the warp)

// One device call's work around the model. The backend runs all of it on one of its own streams (the slot's), so
// the slot's buffers and scratch are only ever used in stream order: `prepare` writes the model inputs (ir (H, W)
// grey and vis (H, W, 3) BGR, device memory of the slot) from the caller's frames, the model runs, `finish` reads
// the fused (H, W, 3) BGR frame into the caller's output. Both get the slot's stream (a cudaStream_t) and throw on
// failure.
struct DeviceSteps {
    std::function<void(DeviceScratch& scratch, uint8_t* ir, uint8_t* vis, void* stream)> prepare;
    std::function<void(const uint8_t* fused, void* stream)> finish;
};

// --- backends ----------------------------------------------------------------------------------------------------
// A model at one frame size. Inputs and output are uint8: ir (1, H, W) grey, vis (1, H, W, 3) BGR, out (1, H, W, 3)
// BGR, tightly packed. run_host may be called from many threads at once.
class Backend {
public:
    virtual ~Backend() = default;
    virtual const char* name() const = 0;
    virtual int width() const = 0;
    virtual int height() const = 0;
    virtual void run_host(const uint8_t* ir, const uint8_t* vis, uint8_t* out) = 0;
    // Device frames: `steps` and the model queued on a stream of the backend's own, after the work queued on
    // `caller_stream` (a cudaStream_t, not the legacy default stream) so far; `caller_stream` then waits for them.
    // Returns when queued. Only backends that run on a GPU implement it.
    virtual bool runs_on_device() const { return false; }
    virtual void run_device(const DeviceSteps& steps, void* caller_stream);
};

std::unique_ptr<Backend> make_aoti_backend(const std::string& path, int instances);
std::unique_ptr<Backend> make_tensorrt_backend(const std::string& path, const maefuse_options& options);

// --- TensorRT engine sidecars (sidecar.cpp): the Python runtime's compatibility rules ------------------------------
struct SidecarFacts {
    std::string tensorrt_version;
    std::string gpu_name;
    int cc_major = 0, cc_minor = 0;
    std::string onnx_path;
    std::string io;
    bool hardware_compat = false, version_compat = false;
    std::vector<int> input_shape_ir;  // first profile's opt shape of input "ir" when recorded
};
struct MachineFacts {
    std::string tensorrt_version;  // "" when this build has no TensorRT
    bool has_gpu = false;
    std::string gpu_problem;  // why there is no GPU (CUDA's message)
    std::string gpu_name;
    int cc_major = 0, cc_minor = 0;
};
// "10.16.0.72" -> {10, 16, 0, 72}: major, minor, patch, build; missing parts count as 0 (tensorrt/sidecar.py).
std::array<int, 4> version_parts(const std::string& version);
std::string sidecar_path(const std::string& engine_path);
SidecarFacts read_sidecar(const std::string& engine_path);
// Throws MAEFUSE_ERROR_INCOMPATIBLE naming both sides; returns notes (same architecture, other GPU model).
std::vector<std::string> check_compatibility(const SidecarFacts& sidecar, const MachineFacts& machine,
                                             bool allow_incompatible, const std::string& engine_path);
// The GPU via the CUDA runtime, and the loaded TensorRT library's own version (getInferLib*Version), not the
// headers' (machine_facts.cpp).
MachineFacts machine_facts(int device);

// --- what a TensorRT engine's tensors must be for the C++ runtime (engine_contract.cpp) ---------------------------
struct EngineTensor {
    bool present = false, input = false, uint8 = false;
    std::vector<int64_t> shape;  // -1 where dynamic
};
struct EngineTensors {
    EngineTensor ir, vis, fused;
    int io_tensors = 0;  // all input and output tensors of the engine
};
struct EngineGeometry {
    int width = 0, height = 0;
    bool dynamic_batch = false;  // the batch axis is -1: set to 1 on every context
};
// Throws MAEFUSE_ERROR_MODEL_FILE naming the engine unless it has exactly uint8 ir (N, H, W), vis (N, H, W, 3) and
// fused (N, H, W, 3) with H, W > 0 and the same everywhere, and a batch axis of 1 or dynamic: buffers hold one frame.
EngineGeometry check_engine_tensors(const EngineTensors& tensors, const std::string& engine_path);

}  // namespace maefuse::detail
