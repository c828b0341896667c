// C API tests on real pairs: parity with the Python Fuser, bad input, threads, engine sidecars, the sample's files.
//   test_capi CASE PACKAGE.pt2 SAMPLES_DIR REFS_DIR [SAMPLE_OUT_DIR]
#include "expect.hpp"
#include <maefuse/maefuse.hpp>

#include <stb_image.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace fs = std::filesystem;

namespace {

struct Image {
    std::vector<uint8_t> px;
    int width = 0, height = 0, channels = 0;
};

Image load(const fs::path& path, int channels) {
    Image image;
    int found = 0;
    uint8_t* data = stbi_load(path.c_str(), &image.width, &image.height, &found, channels);
    if (!data) {
        std::fprintf(stderr, "cannot read %s\n", path.c_str());
        std::exit(1);
    }
    image.channels = channels;
    image.px.assign(data, data + static_cast<size_t>(image.width) * image.height * channels);
    stbi_image_free(data);
    return image;
}

struct Pair {
    std::string stem;
    Image ir, vis, reference;  // ir grey, vis RGB, reference RGB (the Python Fuser's output)
};

std::vector<Pair> load_pairs(const fs::path& samples, const fs::path& refs) {
    std::vector<Pair> pairs;
    std::vector<fs::path> listing;
    for (const auto& entry : fs::directory_iterator(samples / "ir")) listing.push_back(entry.path());
    std::sort(listing.begin(), listing.end());
    for (const auto& ir : listing) {
        const std::string stem = ir.stem().string();
        pairs.push_back({stem, load(ir, 1), load(samples / "vi" / (stem + ".png"), 3), load(refs / (stem + ".png"), 3)});
    }
    if (pairs.empty()) {
        std::fprintf(stderr, "no pairs in %s\n", samples.c_str());
        std::exit(1);
    }
    return pairs;
}

std::vector<uint8_t> fuse(maefuse::Runtime& runtime, const Pair& pair) {
    std::vector<uint8_t> out(pair.vis.px.size());
    auto ir = maefuse::host_frame(pair.ir.px.data(), pair.ir.width, pair.ir.height, MAEFUSE_FORMAT_GRAY8);
    auto vis = maefuse::host_frame(pair.vis.px.data(), pair.vis.width, pair.vis.height, MAEFUSE_FORMAT_RGB);
    auto output = maefuse::host_output(out.data(), pair.vis.width, pair.vis.height, MAEFUSE_FORMAT_RGB);
    runtime.fuse(ir, vis, output);
    return out;
}

// Max and mean |a - b| and PSNR over 8-bit samples; the tests require max <= 1 (one grey level).
struct Difference {
    int max = 0;
    double mean = 0, psnr = 0;
};
Difference compare(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
    Difference d;
    double sum = 0, squared = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        const int e = std::abs(int(a[i]) - int(b[i]));
        d.max = std::max(d.max, e);
        sum += e;
        squared += double(e) * e;
    }
    d.mean = sum / a.size();
    d.psnr = squared == 0 ? INFINITY : 10 * std::log10(255.0 * 255.0 / (squared / a.size()));
    return d;
}

int parity(const std::string& package, const fs::path& samples, const fs::path& refs) {
    maefuse::Runtime runtime(package);
    std::printf("backend %s, model frame %dx%d\n", runtime.backend().c_str(), runtime.width(), runtime.height());
    for (const auto& pair : load_pairs(samples, refs)) {
        const Difference d = compare(fuse(runtime, pair), pair.reference.px);
        std::printf("%s: C++ vs Python Fuser max |diff| %d, mean %.4f, PSNR %.1f dB\n", pair.stem.c_str(), d.max, d.mean,
                    d.psnr);
        EXPECT(d.max <= 1, "%s differs by %d grey levels", pair.stem.c_str(), d.max);
    }
    return failures;
}

int sample_files(const fs::path& samples, const fs::path& refs, const fs::path& sample_out) {
    for (const auto& pair : load_pairs(samples, refs)) {
        const Image written = load(sample_out / (pair.stem + ".png"), 3);
        const Difference d = compare(written.px, pair.reference.px);
        std::printf("%s: sample file vs Python Fuser max |diff| %d, mean %.4f\n", pair.stem.c_str(), d.max, d.mean);
        EXPECT(d.max <= 1, "sample output %s differs by %d", pair.stem.c_str(), d.max);
    }
    return failures;
}

// Expect `status` to be the error `want` with a message mentioning `needle`.
void expect_error(maefuse_status status, maefuse_status want, const std::string& needle, const char* what) {
    const std::string message = maefuse_last_error();
    std::printf("%-34s -> %s: %s\n", what, maefuse_status_name(status), message.c_str());
    EXPECT(status == want, "%s: got %s, want %s", what, maefuse_status_name(status), maefuse_status_name(want));
    EXPECT(message.find(needle) != std::string::npos, "%s: message lacks '%s'", what, needle.c_str());
}

int bad_input(const std::string& package, const fs::path& samples, const fs::path& refs) {
    const fs::path tmp = fs::temp_directory_path() / ("maefuse-test-" + std::to_string(::getpid()));
    fs::create_directories(tmp);
    maefuse_runtime* rt = nullptr;
    expect_error(maefuse_create((tmp / "missing.pt2").c_str(), nullptr, &rt), MAEFUSE_ERROR_MODEL_FILE, "not found",
                 "missing model");
    EXPECT(rt == nullptr, "handle set on failure");
    std::ofstream(tmp / "garbage.pt2") << "this is not a zip archive";
    expect_error(maefuse_create((tmp / "garbage.pt2").c_str(), nullptr, &rt), MAEFUSE_ERROR_MODEL_FILE,
                 "not an AOTInductor package", "corrupt .pt2");
    fs::copy_file(samples / "ir" / "00537D.png", tmp / "picture.pt2", fs::copy_options::overwrite_existing);
    expect_error(maefuse_create((tmp / "picture.pt2").c_str(), nullptr, &rt), MAEFUSE_ERROR_MODEL_FILE,
                 "not an AOTInductor package", "PNG named .pt2");
    std::ofstream(tmp / "model.onnx") << "onnx";
    expect_error(maefuse_create((tmp / "model.onnx").c_str(), nullptr, &rt), MAEFUSE_ERROR_MODEL_FILE, "neither",
                 "foreign model type (.onnx)");
    expect_error(maefuse_create(nullptr, nullptr, &rt), MAEFUSE_ERROR_INVALID_ARGUMENT, "no model path", "null path");
    expect_error(maefuse_create(package.c_str(), nullptr, nullptr), MAEFUSE_ERROR_INVALID_ARGUMENT, "null",
                 "null handle pointer");
    maefuse_options options;
    maefuse_options_init(&options);
    options.homography_path = "/nonexistent/cal.json";
    expect_error(maefuse_create(package.c_str(), &options, &rt), MAEFUSE_ERROR_CALIBRATION, "not found",
                 "missing calibration");
    std::ofstream(tmp / "cal.json") << R"({"homography": [[1, 0], [0, 1]], "ir_size": [640, 480], "vis_size": [640, 480]})";
    options.homography_path = (tmp / "cal.json").c_str();
    const std::string cal = tmp / "cal.json";
    options.homography_path = cal.c_str();
    expect_error(maefuse_create(package.c_str(), &options, &rt), MAEFUSE_ERROR_CALIBRATION, "3x3",
                 "malformed calibration");
    options.instances = -3;
    options.homography_path = nullptr;
    expect_error(maefuse_create(package.c_str(), &options, &rt), MAEFUSE_ERROR_INVALID_ARGUMENT, "instances",
                 "negative instances");

    const Pair pair = load_pairs(samples, refs).front();
    EXPECT(maefuse_create(package.c_str(), nullptr, &rt) == MAEFUSE_OK, "create: %s", maefuse_last_error());
    std::vector<uint8_t> out(pair.vis.px.size());
    const int w = pair.vis.width, h = pair.vis.height;
    maefuse_frame ir = maefuse::host_frame(pair.ir.px.data(), w, h, MAEFUSE_FORMAT_GRAY8);
    maefuse_frame vis = maefuse::host_frame(pair.vis.px.data(), w, h, MAEFUSE_FORMAT_RGB);
    maefuse_output output = maefuse::host_output(out.data(), w, h, MAEFUSE_FORMAT_BGR);
    expect_error(maefuse_fuse(nullptr, &ir, &vis, &output), MAEFUSE_ERROR_INVALID_ARGUMENT, "null", "null runtime");
    expect_error(maefuse_fuse(rt, nullptr, &vis, &output), MAEFUSE_ERROR_INVALID_ARGUMENT, "IR", "null IR frame");
    expect_error(maefuse_fuse(rt, &ir, nullptr, &output), MAEFUSE_ERROR_INVALID_ARGUMENT, "VIS", "null VIS frame");
    expect_error(maefuse_fuse(rt, &ir, &vis, nullptr), MAEFUSE_ERROR_INVALID_ARGUMENT, "output", "null output");
    maefuse_frame bad = vis;
    bad.data = nullptr;
    expect_error(maefuse_fuse(rt, &ir, &bad, &output), MAEFUSE_ERROR_INVALID_ARGUMENT, "no data", "null VIS pixels");
    bad = vis;
    bad.width = w / 2;
    bad.height = h / 2;
    expect_error(maefuse_fuse(rt, &ir, &bad, &output), MAEFUSE_ERROR_FRAME_SIZE, "--camera-size", "VIS at half size");
    bad = ir;
    bad.width = w - 16;
    expect_error(maefuse_fuse(rt, &bad, &vis, &output), MAEFUSE_ERROR_FRAME_SIZE, "IR frame is", "IR of another size");
    bad = vis;
    bad.width = -5;
    expect_error(maefuse_fuse(rt, &ir, &bad, &output), MAEFUSE_ERROR_FRAME_SIZE, "not a valid", "negative width");
    bad = vis;
    bad.format = static_cast<maefuse_format>(42);
    expect_error(maefuse_fuse(rt, &ir, &bad, &output), MAEFUSE_ERROR_INVALID_ARGUMENT, "not accepted",
                 "unknown VIS format");
    bad = ir;
    bad.format = MAEFUSE_FORMAT_BGR;
    expect_error(maefuse_fuse(rt, &bad, &vis, &output), MAEFUSE_ERROR_INVALID_ARGUMENT, "IR takes",
                 "colour IR format");
    bad = vis;
    bad.stride = 7;
    expect_error(maefuse_fuse(rt, &ir, &bad, &output), MAEFUSE_ERROR_INVALID_ARGUMENT, "stride", "short stride");
    maefuse_output small = output;
    small.width = 320;
    expect_error(maefuse_fuse(rt, &ir, &vis, &small), MAEFUSE_ERROR_FRAME_SIZE, "output frame", "small output");
    small = output;
    small.format = MAEFUSE_FORMAT_NV12;
    expect_error(maefuse_fuse(rt, &ir, &vis, &small), MAEFUSE_ERROR_INVALID_ARGUMENT, "not produced", "NV12 output");
#ifdef MAEFUSE_TEST_CUDA_BUILD
    // NULL (the legacy default stream) is refused before anything else: its meaning depends on how the caller was
    // compiled (--default-stream per-thread), and it serialises with every blocking stream.
    expect_error(maefuse_fuse_device_async(rt, &ir, &vis, &output, nullptr), MAEFUSE_ERROR_INVALID_ARGUMENT,
                 "legacy default stream", "device call on the legacy default stream");
    expect_error(maefuse_fuse_device_async(rt, &ir, &vis, &output, reinterpret_cast<void*>(0x1)),
                 MAEFUSE_ERROR_INVALID_ARGUMENT, "legacy default stream", "device call on cudaStreamLegacy");
    // cudaStreamPerThread (0x2) is a stream: a CPU package then says it runs on host frames.
    expect_error(maefuse_fuse_device_async(rt, &ir, &vis, &output, reinterpret_cast<void*>(0x2)),
                 MAEFUSE_ERROR_UNAVAILABLE, "host frames", "device frames on a CPU package");
#else
    expect_error(maefuse_fuse_device_async(rt, &ir, &vis, &output, reinterpret_cast<void*>(0x2)),
                 MAEFUSE_ERROR_UNAVAILABLE, "CUDA", "device frames in a build without CUDA");
#endif
    EXPECT(maefuse_fuse(rt, &ir, &vis, &output) == MAEFUSE_OK, "a good call after bad ones: %s", maefuse_last_error());
    EXPECT(std::string(maefuse_last_error()).empty(), "message cleared after success");
    int fw = 0, fh = 0;
    expect_error(maefuse_frame_size(rt, nullptr, &fh), MAEFUSE_ERROR_INVALID_ARGUMENT, "null", "frame size null");
    EXPECT(maefuse_frame_size(rt, &fw, &fh) == MAEFUSE_OK && fw == w && fh == h, "frame size %dx%d", fw, fh);
    maefuse_destroy(rt);
    maefuse_destroy(nullptr);
    fs::remove_all(tmp);
    return failures;
}

int threads(const std::string& package, const fs::path& samples, const fs::path& refs) {
    const auto pairs = load_pairs(samples, refs);
    maefuse::Runtime runtime(package);
    std::vector<std::vector<uint8_t>> serial;
    for (const auto& pair : pairs) serial.push_back(fuse(runtime, pair));
    constexpr int kThreads = 8, kCallsPerThread = 1;  // 8 calls in flight at once on one runtime
    std::vector<std::vector<std::vector<uint8_t>>> results(kThreads);
    std::vector<std::string> errors(kThreads);
    std::vector<std::thread> workers;
    for (int t = 0; t < kThreads; ++t)
        workers.emplace_back([&, t] {
            try {
                for (int i = 0; i < kCallsPerThread; ++i) results[t].push_back(fuse(runtime, pairs[(t + i) % pairs.size()]));
            } catch (const std::exception& e) {
                errors[t] = e.what();
            }
        });
    for (auto& worker : workers) worker.join();
    for (int t = 0; t < kThreads; ++t) {
        EXPECT(errors[t].empty(), "thread %d: %s", t, errors[t].c_str());
        for (int i = 0; i < static_cast<int>(results[t].size()); ++i) {
            const Difference d = compare(results[t][i], serial[(t + i) % pairs.size()]);
            EXPECT(d.max == 0, "thread %d call %d differs from the serial result by %d", t, i, d.max);
        }
    }
    std::printf("%d threads x %d calls on one runtime: %s serial results\n", kThreads, kCallsPerThread,
                failures ? "NOT the" : "identical to the");
    return failures;
}

int sidecar_gpu(const fs::path& samples) {
    const fs::path tmp = fs::temp_directory_path() / ("maefuse-test-engine-" + std::to_string(::getpid()));
    fs::create_directories(tmp);
    const fs::path engine = tmp / "model.engine";
    std::ofstream(engine) << "not a real plan: the sidecar check refuses it first";
    std::ofstream(engine.string() + ".json") << R"({"format": 1, "tensorrt_version": "10.16.0", "gpu_name":
        "NVIDIA Imaginary GPU", "compute_capability": [1, 0], "onnx_path": "export/model.onnx", "onnx_sha256": "",
        "profiles": [], "input_shapes": {}, "precision": "fp16", "io": "uint8", "graph_metadata": {},
        "build_time": "", "build_seconds": 0, "hardware_compat": false, "version_compat": false})";
    maefuse_runtime* rt = nullptr;
    expect_error(maefuse_create(engine.c_str(), nullptr, &rt), MAEFUSE_ERROR_INCOMPATIBLE, "NVIDIA Imaginary GPU",
                 "engine for another GPU");
    const fs::path lonely = tmp / "lonely.engine";
    std::ofstream(lonely) << "plan without sidecar";
    expect_error(maefuse_create(lonely.c_str(), nullptr, &rt), MAEFUSE_ERROR_MODEL_FILE, "no sidecar",
                 "engine without sidecar");
    std::ofstream(lonely.string() + ".json") << "{broken";
    expect_error(maefuse_create(lonely.c_str(), nullptr, &rt), MAEFUSE_ERROR_MODEL_FILE, "not a maefuse engine sidecar",
                 "corrupt sidecar");
    (void)samples;
    fs::remove_all(tmp);
    return failures;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: test_capi CASE PACKAGE SAMPLES REFS [SAMPLE_OUT]\n");
        return 2;
    }
    const std::string which = argv[1], package = argv[2];
    const fs::path samples = argv[3], refs = argv[4];
    try {
        if (which == "parity") return parity(package, samples, refs);
        if (which == "bad_input") return bad_input(package, samples, refs);
        if (which == "threads") return threads(package, samples, refs);
        if (which == "sidecar_gpu") return sidecar_gpu(samples);
        if (which == "sample_files" && argc > 5) return sample_files(samples, refs, argv[5]);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "FAILED: %s\n", e.what());
        return 1;
    }
    std::fprintf(stderr, "unknown case %s\n", which.c_str());
    return 2;
}
