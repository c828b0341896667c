// TensorRT backend: a uint8-io engine (maefuse-export --io uint8, maefuse-build-engine) run with enqueueV3.
// - The sidecar (ENGINE.json) is checked against this GPU and TensorRT version before deserialising (sidecar.cpp).
// - One execution context, CUDA stream, device buffers and pinned staging buffers per calling thread: TensorRT
//   contexts are not thread-safe; tensor addresses are set once per context and never change.
// - Host frames: staged through pinned memory; device frames: copied device-to-device into the context's buffers
//   on the caller's stream (a megabyte per frame, microseconds), so addresses stay fixed.
// Compiled in CI against TensorRT 10.16 and 11.1 headers (compile only); it has not run on a GPU in this project yet.
#include "internal.hpp"

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace maefuse::detail {

namespace {

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

struct ThreadState {
    nvinfer1::IExecutionContext* context = nullptr;
    cudaStream_t stream = nullptr;
    void* ir_device = nullptr;
    void* vis_device = nullptr;
    void* out_device = nullptr;
    void* ir_host = nullptr;  // pinned staging
    void* vis_host = nullptr;
    void* out_host = nullptr;
    ~ThreadState() {
        delete context;
        if (stream) cudaStreamDestroy(stream);
        for (void* p : {ir_device, vis_device, out_device}) cudaFree(p);
        for (void* p : {ir_host, vis_host, out_host}) cudaFreeHost(p);
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
        cuda_check(cudaSetDevice(device_), "cudaSetDevice");
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_) fail(MAEFUSE_ERROR_INTERNAL, "cannot create a TensorRT runtime: " + logger_.last());
        engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
        if (!engine_)
            fail(MAEFUSE_ERROR_MODEL_FILE, "TensorRT cannot deserialise " + path + ": " + logger_.last() +
                                               " (fix: rebuild it with maefuse-build-engine on this machine)");
        const nvinfer1::Dims ir = engine_->getTensorShape("ir");
        const nvinfer1::Dims vis = engine_->getTensorShape("vis");
        const nvinfer1::Dims fused = engine_->getTensorShape("fused");
        if (ir.nbDims != 3 || vis.nbDims != 4 || fused.nbDims != 4 ||
            engine_->getTensorDataType("ir") != nvinfer1::DataType::kUINT8 ||
            engine_->getTensorDataType("fused") != nvinfer1::DataType::kUINT8)
            fail(MAEFUSE_ERROR_MODEL_FILE, "engine " + path + " does not have uint8 tensors ir (N, H, W), vis (N, H, "
                                           "W, 3) and fused (N, H, W, 3) (fix: export with --io uint8)");
        height_ = static_cast<int>(ir.d[1]);
        width_ = static_cast<int>(ir.d[2]);
        dynamic_batch_ = ir.d[0] < 0;
    }

    ~TensorRTBackend() override {
        states_.clear();  // contexts before the engine
        engine_.reset();
        runtime_.reset();
    }

    const char* name() const override { return "tensorrt"; }
    int width() const override { return width_; }
    int height() const override { return height_; }
    bool runs_on_device() const override { return true; }

    void run_host(const uint8_t* ir, const uint8_t* vis, uint8_t* out) override {
        ThreadState& s = state();
        std::memcpy(s.ir_host, ir, ir_bytes());
        std::memcpy(s.vis_host, vis, rgb_bytes());
        cuda_check(cudaMemcpyAsync(s.ir_device, s.ir_host, ir_bytes(), cudaMemcpyHostToDevice, s.stream), "upload IR");
        cuda_check(cudaMemcpyAsync(s.vis_device, s.vis_host, rgb_bytes(), cudaMemcpyHostToDevice, s.stream), "upload VIS");
        enqueue(s, s.stream);
        cuda_check(cudaMemcpyAsync(s.out_host, s.out_device, rgb_bytes(), cudaMemcpyDeviceToHost, s.stream), "download");
        cuda_check(cudaStreamSynchronize(s.stream), "cudaStreamSynchronize");
        std::memcpy(out, s.out_host, rgb_bytes());
    }

    void run_device(const uint8_t* ir, const uint8_t* vis, uint8_t* out, void* stream) override {
        ThreadState& s = state();
        auto* st = static_cast<cudaStream_t>(stream);
        cuda_check(cudaMemcpyAsync(s.ir_device, ir, ir_bytes(), cudaMemcpyDeviceToDevice, st), "IR to the engine");
        cuda_check(cudaMemcpyAsync(s.vis_device, vis, rgb_bytes(), cudaMemcpyDeviceToDevice, st), "VIS to the engine");
        enqueue(s, st);
        cuda_check(cudaMemcpyAsync(out, s.out_device, rgb_bytes(), cudaMemcpyDeviceToDevice, st), "fused frame out");
    }

private:
    size_t ir_bytes() const { return static_cast<size_t>(width_) * height_; }
    size_t rgb_bytes() const { return ir_bytes() * 3; }

    void enqueue(ThreadState& s, cudaStream_t stream) {
        if (!s.context->enqueueV3(stream))
            fail(MAEFUSE_ERROR_INTERNAL, "TensorRT enqueueV3 failed for " + path_ + ": " + logger_.last());
    }

    ThreadState& state() {
        std::lock_guard<std::mutex> lock(mutex_);
        auto& slot = states_[std::this_thread::get_id()];
        if (slot) return *slot;
        auto s = std::make_unique<ThreadState>();
        cuda_check(cudaSetDevice(device_), "cudaSetDevice");
        s->context = engine_->createExecutionContext();
        if (!s->context) fail(MAEFUSE_ERROR_INTERNAL, "cannot create a TensorRT execution context: " + logger_.last());
        cuda_check(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "cudaStreamCreate");
        cuda_check(cudaMalloc(&s->ir_device, ir_bytes()), "cudaMalloc");
        cuda_check(cudaMalloc(&s->vis_device, rgb_bytes()), "cudaMalloc");
        cuda_check(cudaMalloc(&s->out_device, rgb_bytes()), "cudaMalloc");
        cuda_check(cudaHostAlloc(&s->ir_host, ir_bytes(), cudaHostAllocDefault), "cudaHostAlloc");
        cuda_check(cudaHostAlloc(&s->vis_host, rgb_bytes(), cudaHostAllocDefault), "cudaHostAlloc");
        cuda_check(cudaHostAlloc(&s->out_host, rgb_bytes(), cudaHostAllocDefault), "cudaHostAlloc");
        if (dynamic_batch_) {
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
                fail(MAEFUSE_ERROR_MODEL_FILE, "engine " + path_ + " does not accept batch 1: " + logger_.last());
        }
        if (!s->context->setTensorAddress("ir", s->ir_device) || !s->context->setTensorAddress("vis", s->vis_device) ||
            !s->context->setTensorAddress("fused", s->out_device))
            fail(MAEFUSE_ERROR_INTERNAL, "cannot bind tensors of " + path_ + ": " + logger_.last());
        slot = std::move(s);
        return *slot;
    }

    std::string path_;
    int device_ = 0;
    int width_ = 0, height_ = 0;
    bool dynamic_batch_ = false;
    Logger logger_;
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::mutex mutex_;
    std::unordered_map<std::thread::id, std::unique_ptr<ThreadState>> states_;
};

}  // namespace

std::unique_ptr<Backend> make_tensorrt_backend(const std::string& path, const maefuse_options& options) {
    return std::make_unique<TensorRTBackend>(path, options);
}

}  // namespace maefuse::detail
