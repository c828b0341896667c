// Device tests: they need a CUDA GPU (and, for the C API cases, a TensorRT engine), so ctest runs them only when
// configured with -DMAEFUSE_DEVICE_TESTS=ON on a GPU machine; the executable is compiled in every CUDA build.
//   test_device kernels                       CUDA kernels vs the host code, 0 grey levels apart
//   test_device capi ENGINE SAMPLES           maefuse_fuse_device_async vs maefuse_fuse on one runtime
//   test_device streams ENGINE SAMPLES        two caller streams and eight threads on one runtime vs serial calls
#include "expect.hpp"
#include "internal.hpp"
#include "../cuda/kernels.h"
#include <maefuse/maefuse.hpp>

#include <cuda_runtime_api.h>
#include <stb_image.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace maefuse::detail;

namespace {

#define CUDA_OK(call)                                                                              \
    do {                                                                                           \
        const cudaError_t status_ = (call);                                                        \
        if (status_ != cudaSuccess) {                                                              \
            std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(status_)); \
            std::exit(1);                                                                          \
        }                                                                                          \
    } while (0)

// Device copy of a host buffer, freed at scope end.
struct DeviceBuffer {
    void* ptr = nullptr;
    size_t size = 0;
    explicit DeviceBuffer(size_t bytes) : size(bytes) { CUDA_OK(cudaMalloc(&ptr, bytes ? bytes : 1)); }
    DeviceBuffer(const void* host, size_t bytes) : DeviceBuffer(bytes) {
        CUDA_OK(cudaMemcpy(ptr, host, bytes, cudaMemcpyHostToDevice));
    }
    ~DeviceBuffer() { cudaFree(ptr); }
    std::vector<uint8_t> download() const {
        std::vector<uint8_t> host(size);
        CUDA_OK(cudaMemcpy(host.data(), ptr, size, cudaMemcpyDeviceToHost));
        return host;
    }
    uint8_t* bytes() const { return static_cast<uint8_t*>(ptr); }
};

int max_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
    if (a.size() != b.size()) return 256;
    int worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(int(a[i]) - int(b[i])));
    return worst;
}

// One IR/VIS pair through the kernels and through the host functions; every grey level must agree.
void compare_pair(const char* what, const std::vector<uint8_t>& ir_bytes, maefuse_frame ir,
                  const std::vector<uint8_t>& vis_bytes, maefuse_frame vis, const Registration* registration,
                  size_t ir_offset = 0) {
    const int w = vis.width, h = vis.height;
    // Host.
    maefuse_frame ir_host = ir, vis_host = vis;
    ir_host.data = ir_bytes.data() + ir_offset;
    vis_host.data = vis_bytes.data();
    if (vis.format == MAEFUSE_FORMAT_NV12 && vis.uv_data)
        vis_host.uv_data = vis_bytes.data() + (static_cast<const uint8_t*>(vis.uv_data) - static_cast<const uint8_t*>(vis.data));
    std::vector<uint8_t> grey, model(static_cast<size_t>(w) * h), bgr;
    ir_to_grey8(ir_host, grey);
    if (registration) warp_grey(*registration, grey.data(), model.data());
    else model = grey;
    vis_to_bgr(vis_host, bgr);
    // Device.
    DeviceBuffer ir_dev(ir_bytes.data(), ir_bytes.size()), vis_dev(vis_bytes.data(), vis_bytes.size());
    maefuse_frame ir_d = ir, vis_d = vis;
    ir_d.data = ir_dev.bytes() + ir_offset;
    vis_d.data = vis_dev.bytes();
    if (vis.format == MAEFUSE_FORMAT_NV12 && vis.uv_data)
        vis_d.uv_data = vis_dev.bytes() + (static_cast<const uint8_t*>(vis.uv_data) - static_cast<const uint8_t*>(vis.data));
    DeviceBuffer model_dev(model.size()), bgr_dev(bgr.size());
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    {
        DeviceScratch scratch;
        check_cuda(prepare_device_pair(ir_d, vis_d, registration, w, h, scratch, model_dev.bytes(), bgr_dev.bytes(),
                                       stream),
                   "prepare_device_pair");
        CUDA_OK(cudaStreamSynchronize(stream));
    }
    const int d_ir = max_difference(model_dev.download(), model), d_vis = max_difference(bgr_dev.download(), bgr);
    EXPECT(d_ir == 0, "%s: IR differs by %d grey levels", what, d_ir);
    EXPECT(d_vis == 0, "%s: VIS differs by %d grey levels", what, d_vis);
    // Every output format, with a padded stride, from the host's BGR.
    for (maefuse_format f : {MAEFUSE_FORMAT_BGR, MAEFUSE_FORMAT_BGRX, MAEFUSE_FORMAT_RGB, MAEFUSE_FORMAT_GRAY8}) {
        const size_t stride = maefuse_packed_stride(f, w) + 3;
        std::vector<uint8_t> host_out(stride * h, 7);
        maefuse_output out{};
        out.data = host_out.data();
        out.width = w;
        out.height = h;
        out.format = f;
        out.stride = stride;
        write_output(bgr.data(), out);
        std::vector<uint8_t> device_init(stride * h, 7);
        DeviceBuffer out_dev(device_init.data(), device_init.size()), fused_dev(bgr.data(), bgr.size());
        out.data = out_dev.ptr;
        check_cuda(write_device_output(fused_dev.bytes(), out, stream), "write_device_output");
        CUDA_OK(cudaStreamSynchronize(stream));
        const int d = max_difference(out_dev.download(), host_out);
        EXPECT(d == 0, "%s: output %s differs by %d", what, format_name(f), d);
    }
    CUDA_OK(cudaStreamDestroy(stream));
}

int kernels() {
    std::mt19937 random(27);
    const int w = 64, h = 48;
    // IR GRAY16 at an odd stride and an odd start address (16-bit samples read bytewise), a skewed distribution.
    const size_t ir16_stride = 2 * w + 3;
    std::vector<uint8_t> ir16(1 + ir16_stride * h);
    for (auto& b : ir16) b = static_cast<uint8_t>(random());
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) ir16[1 + y * ir16_stride + 2 * x + 1] = static_cast<uint8_t>(random() % 24 + 10);
    maefuse_frame ir{};
    ir.width = w;
    ir.height = h;
    ir.format = MAEFUSE_FORMAT_GRAY16;
    ir.stride = ir16_stride;
    ir.data = ir16.data() + 1;
    // VIS in every format.
    std::vector<uint8_t> vis_bytes(static_cast<size_t>(w + 5) * 4 * h * 2);
    for (auto& b : vis_bytes) b = static_cast<uint8_t>(random());
    maefuse_frame vis{};
    vis.width = w;
    vis.height = h;
    vis.data = vis_bytes.data();
    for (maefuse_format f : {MAEFUSE_FORMAT_BGR, MAEFUSE_FORMAT_BGRX, MAEFUSE_FORMAT_RGB, MAEFUSE_FORMAT_GRAY8}) {
        vis.format = f;
        vis.stride = maefuse_packed_stride(f, w) + 5;
        compare_pair(format_name(f), ir16, ir, vis_bytes, vis, nullptr, 1);
    }
    vis.format = MAEFUSE_FORMAT_NV12;  // UV plane after Y (stride shared), then a separate plane with its own stride
    vis.stride = w + 2;
    compare_pair("NV12 contiguous", ir16, ir, vis_bytes, vis, nullptr, 1);
    vis.uv_data = vis_bytes.data() + (w + 2) * h + 100;
    vis.uv_stride = w + 6;
    compare_pair("NV12 planes", ir16, ir, vis_bytes, vis, nullptr, 1);
    vis.uv_data = nullptr;
    vis.uv_stride = 0;
    // GRAY8 IR at its own size, warped into the VIS geometry by a perspective homography.
    std::vector<uint8_t> ir8(static_cast<size_t>(40 + 1) * 30);
    for (auto& b : ir8) b = static_cast<uint8_t>(random());
    maefuse_frame small{};
    small.width = 40;
    small.height = 30;
    small.format = MAEFUSE_FORMAT_GRAY8;
    small.stride = 41;
    small.data = ir8.data();
    const double h_ir_to_vis[9] = {1.55, 0.03, 1.7, -0.02, 1.58, 2.3, 0.0004, -0.0003, 1.0};
    const Registration registration = make_registration(h_ir_to_vis, 40, 30, w, h);
    vis.format = MAEFUSE_FORMAT_BGR;
    vis.stride = 0;
    compare_pair("warp GRAY8", ir8, small, vis_bytes, vis, &registration);
    std::printf("kernels vs host: %s\n", failures ? "DIFFERENT" : "identical grey levels");
    return failures;
}

struct Pair {
    std::vector<uint8_t> ir, vis;
    int width = 0, height = 0;
};

Pair load_pair(const std::string& samples, int w, int h) {
    Pair p;
    int iw = 0, ih = 0, n = 0, vw = 0, vh = 0;
    uint8_t* ir = stbi_load((samples + "/ir/00537D.png").c_str(), &iw, &ih, &n, 1);
    uint8_t* vis = stbi_load((samples + "/vi/00537D.png").c_str(), &vw, &vh, &n, 3);
    if (!ir || !vis || iw != w || ih != h || vw != w || vh != h) {
        std::fprintf(stderr, "the sample pair is not %dx%d like the engine\n", w, h);
        std::exit(1);
    }
    p.ir.assign(ir, ir + static_cast<size_t>(w) * h);
    p.vis.assign(vis, vis + static_cast<size_t>(w) * h * 3);
    stbi_image_free(ir);
    stbi_image_free(vis);
    p.width = w;
    p.height = h;
    return p;
}

std::vector<uint8_t> host_call(maefuse::Runtime& runtime, const Pair& p) {
    std::vector<uint8_t> out(p.vis.size());
    maefuse_output output = maefuse::host_output(out.data(), p.width, p.height, MAEFUSE_FORMAT_BGR);
    runtime.fuse(maefuse::host_frame(p.ir.data(), p.width, p.height, MAEFUSE_FORMAT_GRAY8),
                 maefuse::host_frame(p.vis.data(), p.width, p.height, MAEFUSE_FORMAT_RGB), output);
    return out;
}

// One device call on `stream`; the output is read back after the stream synchronises.
std::vector<uint8_t> device_call(maefuse_runtime* rt, const Pair& p, cudaStream_t stream) {
    DeviceBuffer ir(p.ir.data(), p.ir.size()), vis(p.vis.data(), p.vis.size()), out(p.vis.size());
    maefuse_frame ir_frame = maefuse::host_frame(ir.ptr, p.width, p.height, MAEFUSE_FORMAT_GRAY8);
    maefuse_frame vis_frame = maefuse::host_frame(vis.ptr, p.width, p.height, MAEFUSE_FORMAT_RGB);
    maefuse_output out_frame = maefuse::host_output(out.ptr, p.width, p.height, MAEFUSE_FORMAT_BGR);
    const maefuse_status status = maefuse_fuse_device_async(rt, &ir_frame, &vis_frame, &out_frame, stream);
    EXPECT(status == MAEFUSE_OK, "device call: %s", maefuse_last_error());
    CUDA_OK(cudaStreamSynchronize(stream));
    return out.download();
}

int capi(const std::string& engine, const std::string& samples) {
    maefuse::Runtime runtime(engine);
    int w = 0, h = 0;
    maefuse_frame_size(runtime.get(), &w, &h);
    const Pair pair = load_pair(samples, w, h);
    const auto host = host_call(runtime, pair);
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    const auto device = device_call(runtime.get(), pair, stream);
    EXPECT(max_difference(device, host) == 0, "device call differs from the host call by %d", max_difference(device, host));
    // A host call right after a device call on the same thread: both on the slot's stream, in order.
    const auto again = host_call(runtime, pair);
    EXPECT(again == host, "host call after a device call differs");
    CUDA_OK(cudaStreamDestroy(stream));
    return failures;
}

int streams(const std::string& engine, const std::string& samples) {
    maefuse::Runtime runtime(engine);
    int w = 0, h = 0;
    maefuse_frame_size(runtime.get(), &w, &h);
    Pair pair = load_pair(samples, w, h);
    Pair flipped = pair;  // a second input so results from different calls cannot be mistaken for one another
    for (auto& v : flipped.vis) v = static_cast<uint8_t>(255 - v);
    const std::vector<uint8_t> want[2] = {host_call(runtime, pair), host_call(runtime, flipped)};
    cudaStream_t caller[2];
    for (auto& s : caller) CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    constexpr int kThreads = 8, kCalls = 6;
    std::vector<int> wrong(kThreads, 0);
    std::vector<std::thread> workers;
    for (int t = 0; t < kThreads; ++t)
        workers.emplace_back([&, t] {
            for (int i = 0; i < kCalls; ++i) {
                const int which = (t + i) % 2;
                // Alternate caller streams and host calls on one thread: every mix the slots must keep apart.
                const auto got = i % 3 == 2 ? host_call(runtime, which ? flipped : pair)
                                            : device_call(runtime.get(), which ? flipped : pair, caller[(t + i) % 2]);
                if (got != want[which]) ++wrong[t];
            }
        });
    for (auto& worker : workers) worker.join();
    for (int t = 0; t < kThreads; ++t) EXPECT(wrong[t] == 0, "thread %d: %d results differ from serial", t, wrong[t]);
    for (auto& s : caller) CUDA_OK(cudaStreamDestroy(s));
    std::printf("%d threads x %d calls over 2 streams: %s\n", kThreads, kCalls, failures ? "DIFFERENT" : "identical");
    return failures;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string which = argc > 1 ? argv[1] : "";
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::fprintf(stderr, "no CUDA GPU: the device tests need one\n");
        return 1;
    }
    try {
        if (which == "kernels") return kernels();
        if (which == "capi" && argc > 3) return capi(argv[2], argv[3]);
        if (which == "streams" && argc > 3) return streams(argv[2], argv[3]);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "FAILED: %s\n", e.what());
        return 1;
    }
    std::fprintf(stderr, "usage: test_device kernels | capi ENGINE SAMPLES | streams ENGINE SAMPLES\n");
    return 2;
}
