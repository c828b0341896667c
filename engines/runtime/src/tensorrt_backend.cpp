// TensorRT backend: a uint8-io engine (maefuse-export --io uint8, maefuse-build-engine) run with enqueueV3.
// - The sidecar (ENGINE.json) is checked against this GPU and the loaded TensorRT library before deserialising
//   (sidecar.cpp); the engine's tensors against what the buffers hold (engine_contract.cpp: one frame per call).
// - Execution contexts are not thread-safe, so each call borrows a slot from a pool for its length (host side). A
//   slot owns one context, one non-blocking CUDA stream, two events, the device buffers bound to the context once
//   (cudaMalloc'd, so 256-byte aligned), pinned staging buffers and the device-frame scratch. Everything a call does
//   with them is queued on the slot's own stream, so calls that reuse a slot (another thread, another caller
//   stream, a host call after a device call) run in that stream's order and never overlap on its buffers.
// - Host frames: staged through pinned memory, the slot's stream synchronised before returning.
// - Device frames: `ready` recorded on the caller's stream, the slot's stream waits for it; frame processing,
//   enqueueV3 and the output conversion on the slot's stream; `done` recorded there, the caller's stream waits for
//   it. Returns without waiting on the host.
// - Slots: a dynamic-shape engine gives each slot its own optimization profile (TensorRT: each context in
//   concurrent use needs a separate one), so there are at most as many slots as profiles; a static engine (one
//   profile) allows `instances` slots (0: 2). Callers beyond that wait for a free slot; slots live until destroy.
// - Every call makes the runtime's device current and puts the caller's back (multi-GPU callers).
// Compiled in CI against TensorRT 10.16 and 11.1 headers (compile only); it has not run on a GPU in this project yet.
#include "internal.hpp"
#include "../../cuda/kernels.h"

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <vector>

namespace maefuse::detail {

namespace {

constexpr int kDefaultSlots = 2;

void cuda_check(cudaError_t status, const char* what) {
    if (status != cudaSuccess)
        fail(MAEFUSE_ERROR_CUDA, std::string(what) + ": " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

class Logger final : public nvinfer1::ILogger {
public:
    void log(Severity severity, char const* message) noexcept override {
        if (severity > Severity::kWARNING) return;
        std::lock_guard<std::mutex> lock(mutex_);
        last_ = message;
    }
    std::string last() {
        std::lock_guard<std::mutex> lock(mutex_);
        return last_;
    }

private:
    std::mutex mutex_;
    std::string last_;
};

// Makes `device` current for one call and puts the caller's current device back (CUDA keeps it per host thread;
// a library must not change it under its caller).
class DeviceGuard {
public:
    explicit DeviceGuard(int device) {
        cuda_check(cudaGetDevice(&previous_), "cudaGetDevice");
        if (previous_ != device) cuda_check(cudaSetDevice(device), "cudaSetDevice");
        changed_ = previous_ != device;
    }
    ~DeviceGuard() {
        if (changed_) cudaSetDevice(previous_);
    }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

private:
    int previous_ = 0;
    bool changed_ = false;
};

struct Slot {
    int device = 0;
    nvinfer1::IExecutionContext* context = nullptr;
    cudaStream_t stream = nullptr;
    cudaEvent_t ready = nullptr;  // recorded on a caller's stream: "the caller's frames are written"
    cudaEvent_t done = nullptr;   // recorded on this slot's stream: "the output is written, the slot's buffers free"
    void* ir_device = nullptr;
    void* vis_device = nullptr;
    void* out_device = nullptr;
    void* ir_host = nullptr;  // pinned staging
    void* vis_host = nullptr;
    void* out_host = nullptr;
    DeviceScratch scratch;

    explicit Slot(int device_index) : device(device_index) {}
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    // Device calls return before their work runs: wait for it, on the slot's device, before anything it uses is
    // freed; then put the caller's device back. Best effort: a destructor reports nothing.
    ~Slot() {
        int previous = -1;
        const bool known = cudaGetDevice(&previous) == cudaSuccess;
        cudaSetDevice(device);
        if (stream) cudaStreamSynchronize(stream);
        delete context;
        scratch.release();
        for (void* p : {ir_device, vis_device, out_device}) cudaFree(p);
        for (void* p : {ir_host, vis_host, out_host}) cudaFreeHost(p);
        for (cudaEvent_t e : {ready, done})
            if (e) cudaEventDestroy(e);
        if (stream) cudaStreamDestroy(stream);
        if (known && previous != device) cudaSetDevice(previous);
    }
};

class TensorRTBackend final : public Backend {
public:
    TensorRTBackend(const std::string& path, const maefuse_options& options) : path_(path), device_(options.device) {
        std::ifstream file(path, std::ios::binary);
        if (!file) fail(MAEFUSE_ERROR_MODEL_FILE, "engine file not found: " + path);
        const SidecarFacts sidecar = read_sidecar(path);
        check_compatibility(sidecar, machine_facts(device_), options.allow_incompatible != 0, path);
        if (sidecar.io != "uint8")
            fail(MAEFUSE_ERROR_MODEL_FILE, "engine " + path + " has float io; the C++ runtime takes engines with the "
                                           "processing inside (fix: maefuse-export --io uint8 --camera-size WxH, then "
                                           "maefuse-build-engine)");
        const std::vector<char> plan((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
        DeviceGuard guard(device_);
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_) fail(MAEFUSE_ERROR_INTERNAL, "cannot create a TensorRT runtime: " + logger_.last());
        // A version-compatible plan carries the lean runtime it runs on as host code; TensorRT refuses to load it
        // unless allowed (the Python backend does the same).
        if (sidecar.version_compat) runtime_->setEngineHostCodeAllowed(true);
        engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
        if (!engine_)
            fail(MAEFUSE_ERROR_MODEL_FILE, "TensorRT cannot deserialise " + path + ": " + logger_.last() +
                                               " (fix: rebuild it with maefuse-build-engine on this machine)");
        const EngineGeometry geometry = check_engine_tensors(describe_tensors(), path);
        height_ = geometry.height;
        width_ = geometry.width;
        dynamic_batch_ = geometry.dynamic_batch;
        const int profiles = engine_->getNbOptimizationProfiles();
        const int wanted = options.instances > 0 ? options.instances : kDefaultSlots;
        max_slots_ = dynamic_batch_ ? std::min(wanted, std::max(profiles, 1)) : wanted;
    }

    ~TensorRTBackend() override {
        {
            std::unique_lock<std::mutex> lock(mutex_);
            idle_.clear();
        }
        slots_.clear();  // each slot synchronises its stream; contexts before the engine
        engine_.reset();
        runtime_.reset();
    }

    const char* name() const override { return "tensorrt"; }
    int width() const override { return width_; }
    int height() const override { return height_; }
    bool runs_on_device() const override { return true; }

    void run_host(const uint8_t* ir, const uint8_t* vis, uint8_t* out) override {
        DeviceGuard guard(device_);
        Lease lease(*this);
        Slot& s = lease.slot();
        // The pinned buffers are free: every host call synchronises before returning and device calls do not use
        // them. The device buffers may still be in use by an earlier device call: the copies below queue after it.
        std::memcpy(s.ir_host, ir, ir_bytes());
        std::memcpy(s.vis_host, vis, rgb_bytes());
        cuda_check(cudaMemcpyAsync(s.ir_device, s.ir_host, ir_bytes(), cudaMemcpyHostToDevice, s.stream), "upload IR");
        cuda_check(cudaMemcpyAsync(s.vis_device, s.vis_host, rgb_bytes(), cudaMemcpyHostToDevice, s.stream), "upload VIS");
        enqueue(s);
        cuda_check(cudaMemcpyAsync(s.out_host, s.out_device, rgb_bytes(), cudaMemcpyDeviceToHost, s.stream), "download");
        cuda_check(cudaStreamSynchronize(s.stream), "running the engine");
        std::memcpy(out, s.out_host, rgb_bytes());
    }

    void run_device(const DeviceSteps& steps, void* caller_handle) override {
        DeviceGuard guard(device_);
        Lease lease(*this);
        Slot& s = lease.slot();
        auto caller = static_cast<cudaStream_t>(caller_handle);
        cuda_check(cudaEventRecord(s.ready, caller), "recording an event on the caller's stream");
        cuda_check(cudaStreamWaitEvent(s.stream, s.ready, 0), "ordering the runtime after the caller's work");
        try {
            steps.prepare(s.scratch, static_cast<uint8_t*>(s.ir_device), static_cast<uint8_t*>(s.vis_device), s.stream);
            enqueue(s);
            steps.finish(static_cast<const uint8_t*>(s.out_device), s.stream);
        } catch (...) {
            // Whatever was queued reads the caller's frames: the caller's stream still waits for it.
            if (cudaEventRecord(s.done, s.stream) == cudaSuccess) cudaStreamWaitEvent(caller, s.done, 0);
            throw;
        }
        cuda_check(cudaEventRecord(s.done, s.stream), "recording an event on the runtime's stream");
        cuda_check(cudaStreamWaitEvent(caller, s.done, 0), "ordering the caller's stream after the runtime");
    }

private:
    // A slot borrowed for one call; returned to the pool when the call's work is queued (or has failed).
    class Lease {
    public:
        explicit Lease(TensorRTBackend& backend) : backend_(backend), slot_(backend.acquire()) {}
        ~Lease() { backend_.release(slot_); }
        Lease(const Lease&) = delete;
        Lease& operator=(const Lease&) = delete;
        Slot& slot() { return *slot_; }

    private:
        TensorRTBackend& backend_;
        Slot* slot_;
    };

    size_t ir_bytes() const { return static_cast<size_t>(width_) * height_; }
    size_t rgb_bytes() const { return ir_bytes() * 3; }

    EngineTensors describe_tensors() const {
        EngineTensors t;
        t.io_tensors = engine_->getNbIOTensors();
        for (auto [name, tensor] : {std::pair{"ir", &t.ir}, std::pair{"vis", &t.vis}, std::pair{"fused", &t.fused}}) {
            bool found = false;
            for (int i = 0; i < t.io_tensors && !found; ++i) found = std::strcmp(engine_->getIOTensorName(i), name) == 0;
            if (!found) continue;
            tensor->present = true;
            tensor->input = engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
            tensor->uint8 = engine_->getTensorDataType(name) == nvinfer1::DataType::kUINT8;
            const nvinfer1::Dims dims = engine_->getTensorShape(name);
            for (int d = 0; d < dims.nbDims; ++d) tensor->shape.push_back(dims.d[d]);
        }
        return t;
    }

    void enqueue(Slot& s) {
        if (!s.context->enqueueV3(s.stream))
            fail(MAEFUSE_ERROR_INTERNAL, "TensorRT enqueueV3 failed for " + path_ + ": " + logger_.last());
    }

    Slot* acquire() {
        std::unique_lock<std::mutex> lock(mutex_);
        available_.wait(lock, [&] { return !idle_.empty() || static_cast<int>(slots_.size()) + creating_ < max_slots_; });
        if (!idle_.empty()) {
            Slot* slot = idle_.back();
            idle_.pop_back();
            return slot;
        }
        int profile = next_profile_;
        if (!unused_profiles_.empty()) {
            profile = unused_profiles_.back();
            unused_profiles_.pop_back();
        } else {
            ++next_profile_;
        }
        ++creating_;
        lock.unlock();
        std::unique_ptr<Slot> slot;
        try {
            slot = make_slot(profile);
        } catch (...) {
            lock.lock();
            --creating_;
            unused_profiles_.push_back(profile);
            available_.notify_one();
            throw;
        }
        lock.lock();
        --creating_;
        slots_.push_back(std::move(slot));
        return slots_.back().get();
    }

    void release(Slot* slot) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            idle_.push_back(slot);
        }
        available_.notify_one();
    }

    // A new slot; a dynamic-shape engine's slot `index` runs on optimization profile `index` (its own).
    std::unique_ptr<Slot> make_slot(int index) {
        auto s = std::make_unique<Slot>(device_);
        s->context = engine_->createExecutionContext();
        if (!s->context) fail(MAEFUSE_ERROR_INTERNAL, "cannot create a TensorRT execution context: " + logger_.last());
        // Non-blocking: the slot's stream must not serialise with other work on the legacy default stream.
        cuda_check(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "cudaStreamCreate");
        cuda_check(cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming), "cudaEventCreate");
        cuda_check(cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming), "cudaEventCreate");
        // Separate allocations: cudaMalloc returns 256-byte aligned memory, which setTensorAddress requires.
        cuda_check(cudaMalloc(&s->ir_device, ir_bytes()), "cudaMalloc");
        cuda_check(cudaMalloc(&s->vis_device, rgb_bytes()), "cudaMalloc");
        cuda_check(cudaMalloc(&s->out_device, rgb_bytes()), "cudaMalloc");
        cuda_check(cudaHostAlloc(&s->ir_host, ir_bytes(), cudaHostAllocDefault), "cudaHostAlloc");
        cuda_check(cudaHostAlloc(&s->vis_host, rgb_bytes(), cudaHostAllocDefault), "cudaHostAlloc");
        cuda_check(cudaHostAlloc(&s->out_host, rgb_bytes(), cudaHostAllocDefault), "cudaHostAlloc");
        if (dynamic_batch_) {
            if (index > 0) {
                if (!s->context->setOptimizationProfileAsync(index, s->stream))
                    fail(MAEFUSE_ERROR_INTERNAL, "cannot select optimization profile " + std::to_string(index) +
                                                     " of " + path_ + ": " + logger_.last());
                cuda_check(cudaStreamSynchronize(s->stream), "selecting an optimization profile");
            }
            nvinfer1::Dims ir{};
            ir.nbDims = 3;
            ir.d[0] = 1;
            ir.d[1] = height_;
            ir.d[2] = width_;
            nvinfer1::Dims vis{};
            vis.nbDims = 4;
            vis.d[0] = 1;
            vis.d[1] = height_;
            vis.d[2] = width_;
            vis.d[3] = 3;
            if (!s->context->setInputShape("ir", ir) || !s->context->setInputShape("vis", vis))
                fail(MAEFUSE_ERROR_MODEL_FILE, "engine " + path_ + " does not accept batch 1 (profile " +
                                                   std::to_string(index) + "): " + logger_.last() +
                                                   " (fix: maefuse-build-engine --batch-range with 1 in its range)");
        }
        if (!s->context->setTensorAddress("ir", s->ir_device) || !s->context->setTensorAddress("vis", s->vis_device) ||
            !s->context->setTensorAddress("fused", s->out_device))
            fail(MAEFUSE_ERROR_INTERNAL, "cannot bind tensors of " + path_ + ": " + logger_.last());
        return s;
    }

    std::string path_;
    int device_ = 0;
    int width_ = 0, height_ = 0;
    bool dynamic_batch_ = false;
    int max_slots_ = kDefaultSlots;
    Logger logger_;
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::mutex mutex_;
    std::condition_variable available_;
    std::vector<std::unique_ptr<Slot>> slots_;  // every slot made; at most max_slots_
    std::vector<Slot*> idle_;                   // slots no call holds
    int creating_ = 0;                          // slots being made outside the lock
    int next_profile_ = 0;                      // profile of the next new slot (unique per slot)
    std::vector<int> unused_profiles_;          // profiles of slots whose making failed
};

}  // namespace

std::unique_ptr<Backend> make_tensorrt_backend(const std::string& path, const maefuse_options& options) {
    return std::make_unique<TensorRTBackend>(path, options);
}

}  // namespace maefuse::detail
