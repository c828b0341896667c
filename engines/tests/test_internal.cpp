// Library internals without a model: 16-bit IR gain, VIS pixel formats, the registration warp, sidecar rules, and
// the element's pairing rule on the cases the Python pairer is tested with (tests/data/pairing_cases.json).
#include "../gstreamer/pairing_rule.hpp"
#include "expect.hpp"
#include "internal.hpp"
#include "pixel_math.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace maefuse::detail;

namespace {

maefuse_frame frame(const void* data, int w, int h, maefuse_format f) {
    maefuse_frame fr{};
    fr.data = data;
    fr.width = w;
    fr.height = h;
    fr.format = f;
    return fr;
}

// numpy: np.percentile(ramp, (0.5, 99.5)) of 0, 3, ..., 2997 is 14.985 and 2982.015; the stretch maps v to
// clip((v - low) * 255 / (high - low) + 0.5, 0, 255) truncated.
int ir16() {
    std::vector<uint16_t> ramp(1000);
    for (int i = 0; i < 1000; ++i) ramp[i] = static_cast<uint16_t>(3 * i);
    std::vector<uint8_t> grey;
    ir_to_grey8(frame(ramp.data(), 1000, 1, MAEFUSE_FORMAT_GRAY16), grey);
    const double low = 14.985, high = 2982.015;
    for (int i : {0, 4, 5, 100, 500, 994, 995, 999}) {
        const double want = std::floor(std::min(255.0, std::max(0.0, (3 * i - low) * 255.0 / (high - low) + 0.5)));
        EXPECT(std::abs(grey[i] - want) <= 0.0, "pixel %d: %d, want %.0f", i, grey[i], want);
    }
    EXPECT(grey[0] == 0 && grey[999] == 255, "ends %d %d", grey[0], grey[999]);
    return failures;
}

int vis_formats() {
    const uint8_t bgrx[8] = {10, 20, 30, 99, 40, 50, 60, 99};
    const uint8_t rgb[6] = {30, 20, 10, 60, 50, 40};
    const uint8_t grey[2] = {7, 200};
    std::vector<uint8_t> out;
    vis_to_bgr(frame(bgrx, 2, 1, MAEFUSE_FORMAT_BGRX), out);
    EXPECT(out == std::vector<uint8_t>({10, 20, 30, 40, 50, 60}), "BGRX");
    vis_to_bgr(frame(rgb, 2, 1, MAEFUSE_FORMAT_RGB), out);
    EXPECT(out == std::vector<uint8_t>({10, 20, 30, 40, 50, 60}), "RGB");
    vis_to_bgr(frame(grey, 2, 1, MAEFUSE_FORMAT_GRAY8), out);
    EXPECT(out == std::vector<uint8_t>({7, 7, 7, 200, 200, 200}), "GRAY8");
    // NV12 mid grey (Y 126, U = V = 128) -> 128 in all channels (BT.601 limited range); pure Y ramps stay grey.
    std::vector<uint8_t> nv12(4 * 2 + 4 * 1, 128);
    for (int i = 0; i < 8; ++i) nv12[i] = 126;
    vis_to_bgr(frame(nv12.data(), 4, 2, MAEFUSE_FORMAT_NV12), out);
    for (uint8_t v : out) EXPECT(std::abs(int(v) - 128) <= 1, "NV12 grey -> %d", v);
    // 16 is black and 235 white in limited range.
    for (int i = 0; i < 8; ++i) nv12[i] = i < 4 ? 16 : 235;
    vis_to_bgr(frame(nv12.data(), 4, 2, MAEFUSE_FORMAT_NV12), out);
    EXPECT(out[0] == 0 && out[3 * 4] == 255, "NV12 black/white -> %d %d", out[0], out[12]);
    return failures;
}

int warp() {
    const int w = 8, h = 6;
    std::vector<uint8_t> ir(w * h), out(w * h);
    for (int i = 0; i < w * h; ++i) ir[i] = static_cast<uint8_t>(5 * i);
    const double identity[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    warp_grey(make_registration(identity, w, h, w, h), ir.data(), out.data());
    EXPECT(out == ir, "identity warp changed the frame");
    // IR pixel (x, y) lands at VIS (x + 2, y + 1): VIS (x, y) shows IR (x - 2, y - 1), 0 where IR has nothing.
    const double shift[9] = {1, 0, 2, 0, 1, 1, 0, 0, 1};
    warp_grey(make_registration(shift, w, h, w, h), ir.data(), out.data());
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
            const int want = (x >= 2 && y >= 1) ? ir[(y - 1) * w + (x - 2)] : 0;
            EXPECT(out[y * w + x] == want, "shift at %d,%d: %d want %d", x, y, out[y * w + x], want);
        }
    // Half-pixel shift: the average of two neighbours.
    const double half[9] = {1, 0, 0.5, 0, 1, 0, 0, 0, 1};
    warp_grey(make_registration(half, w, h, w, h), ir.data(), out.data());
    EXPECT(out[2 * w + 3] == std::lround((ir[2 * w + 2] + ir[2 * w + 3]) / 2.0), "half shift %d", out[2 * w + 3]);
    // Scale 2x into a larger VIS frame: VIS (2x, 2y) shows IR (x, y).
    const double scale[9] = {2, 0, 0, 0, 2, 0, 0, 0, 1};
    std::vector<uint8_t> big(2 * w * 2 * h);
    warp_grey(make_registration(scale, w, h, 2 * w, 2 * h), ir.data(), big.data());
    EXPECT(big[(2 * 3) * 2 * w + 2 * 5] == ir[3 * w + 5], "scale %d vs %d", big[(6) * 2 * w + 10], ir[3 * w + 5]);
    return failures;
}

// A call that must be refused with `status` and a message naming `needle` (the one line a user reads); `what` names
// the call when it is accepted instead.
template <class Call>
void expect_refusal(Call call, int status, const std::string& what, const std::string& needle) {
    try {
        call();
        EXPECT(false, "%s accepted, expected a refusal mentioning %s", what.c_str(), needle.c_str());
    } catch (const Failure& e) {
        std::printf("refused: %s\n", e.what());
        EXPECT(e.status == status, "status %d", e.status);
        EXPECT(std::string(e.what()).find(needle) != std::string::npos, "message lacks %s", needle.c_str());
    }
}

void expect_incompatible(const SidecarFacts& s, const MachineFacts& m, bool allow, const std::string& needle) {
    expect_refusal([&] { check_compatibility(s, m, allow, "model.engine"); }, MAEFUSE_ERROR_INCOMPATIBLE, "sidecar",
                   needle);
}

int sidecar_rules() {
    SidecarFacts s;
    s.tensorrt_version = "10.16.0";
    s.gpu_name = "NVIDIA A100-SXM4-80GB";
    s.cc_major = 8;
    s.cc_minor = 0;
    s.onnx_path = "export/model.onnx";
    MachineFacts m;
    m.tensorrt_version = "10.16.0";
    m.has_gpu = true;
    m.gpu_name = "NVIDIA A100-PCIE-40GB";
    m.cc_major = 8;
    m.cc_minor = 0;
    auto notes = check_compatibility(s, m, false, "model.engine");
    EXPECT(notes.size() == 1 && notes[0].find("same architecture") != std::string::npos, "same-arch note");
    m.gpu_name = "NVIDIA H100 80GB HBM3";
    m.cc_major = 9;
    expect_incompatible(s, m, false, "not built with --hardware-compat");
    s.hardware_compat = true;
    expect_incompatible(s, m, false, "allow_incompatible can override");
    notes = check_compatibility(s, m, true, "model.engine");
    EXPECT(notes.size() == 1 && notes[0].find("hardware-compatible") != std::string::npos, "hw-compat note");
    m.cc_major = 7;
    m.cc_minor = 5;
    expect_incompatible(s, m, true, "8.0 or newer");
    m.cc_major = 8;
    m.cc_minor = 0;
    m.tensorrt_version = "10.15.1";
    expect_incompatible(s, m, true, "not built with --version-compat");
    s.version_compat = true;
    expect_incompatible(s, m, true, "which is older");
    m.tensorrt_version = "10.17.0";
    expect_incompatible(s, m, false, "--version-compat, so allow_incompatible");
    notes = check_compatibility(s, m, true, "model.engine");
    EXPECT(!notes.empty() && notes.back().find("version-compatible engine") != std::string::npos, "version note");
    m.has_gpu = false;
    m.gpu_problem = "cudaErrorNoDevice: no CUDA-capable device is detected";
    expect_incompatible(s, m, true, "no usable CUDA GPU");
    return failures;
}

int calibration_errors() {
    const auto dir = std::filesystem::temp_directory_path();
    auto write = [&](const std::string& name, const std::string& text) {
        const auto path = (dir / name).string();
        std::ofstream(path) << text;
        return path;
    };
    auto refuse = [&](const std::string& path, const std::string& needle) {
        expect_refusal([&] { load_registration(path); }, MAEFUSE_ERROR_CALIBRATION, path, needle);
    };
    refuse("/nonexistent/cal.json", "not found");
    refuse(write("maefuse-cal-a.json", "{not json"), "not valid JSON");
    refuse(write("maefuse-cal-b.json", R"({"homography": [[1,0,0],[0,1,0],[0,0,1]], "ir_size": [640, 480]})"),
           "lacks vis_size");
    refuse(write("maefuse-cal-c.json",
                 R"({"homography": [[1,2,0],[2,4,0],[0,0,1]], "ir_size": [640,480], "vis_size": [640,480]})"),
           "singular");
    refuse(write("maefuse-cal-d.json", R"({"format": "other", "homography": []})"), "format");
    const Registration r = load_registration(write(
        "maefuse-cal-e.json", R"({"format": "maefuse-registration", "version": 1, "homography": [[2,0,4],[0,2,2],[0,0,2]],
        "ir_size": [320, 256], "vis_size": [640, 512], "model": "homography"})"));
    EXPECT(r.ir_to_vis[0] == 1 && r.ir_to_vis[2] == 2 && r.ir_width == 320 && r.vis_height == 512, "normalised");
    return failures;
}


// The sidecar's TensorRT version against the loaded library's: all four parts (tensorrt/sidecar.py version_parts).
int version_parts_case() {
    EXPECT((version_parts("10.16.0.72") == std::array<int, 4>{10, 16, 0, 72}), "four parts");
    EXPECT((version_parts("11.1") == std::array<int, 4>{11, 1, 0, 0}), "missing parts are 0");
    EXPECT((version_parts("") == std::array<int, 4>{0, 0, 0, 0}), "empty");
    SidecarFacts s;
    s.tensorrt_version = "10.16.0.72";
    s.gpu_name = "NVIDIA H100 80GB HBM3";
    s.cc_major = 9;
    MachineFacts m;
    m.has_gpu = true;
    m.gpu_name = s.gpu_name;
    m.cc_major = 9;
    m.tensorrt_version = "10.16.0.72";
    EXPECT(check_compatibility(s, m, false, "model.engine").empty(), "same build accepted");
    m.tensorrt_version = "10.16.0.80";  // another build of the same release: TensorRT refuses the plan
    expect_incompatible(s, m, false, "not built with --version-compat");
    s.version_compat = true;
    m.tensorrt_version = "10.16.0.60";
    expect_incompatible(s, m, true, "which is older");
    return failures;
}

EngineTensors good_tensors(int64_t batch, int64_t h, int64_t w) {
    EngineTensors t;
    t.io_tensors = 3;
    t.ir = {true, true, true, {batch, h, w}};
    t.vis = {true, true, true, {batch, h, w, 3}};
    t.fused = {true, false, true, {batch, h, w, 3}};
    return t;
}

void expect_refused(const EngineTensors& t, const std::string& needle) {
    expect_refusal([&] { check_engine_tensors(t, "model.engine"); }, MAEFUSE_ERROR_MODEL_FILE, "engine", needle);
}

// The engine's tensors before any buffer is sized from them: one frame per call, uint8, one fixed frame size.
int engine_tensors() {
    EngineGeometry g = check_engine_tensors(good_tensors(1, 480, 640), "model.engine");
    EXPECT(g.width == 640 && g.height == 480 && !g.dynamic_batch, "fixed batch 1: %dx%d", g.width, g.height);
    g = check_engine_tensors(good_tensors(-1, 480, 640), "model.engine");
    EXPECT(g.dynamic_batch, "dynamic batch");
    expect_refused(good_tensors(4, 480, 640), "fixed batch of 4");  // buffers hold one frame: GPU out of bounds
    expect_refused(good_tensors(1, -1, 640), "fixed camera size");
    expect_refused(good_tensors(1, 480, 0), "fixed camera size");
    EngineTensors t = good_tensors(1, 480, 640);
    t.vis.uint8 = false;
    expect_refused(t, "vis tensor that is not uint8");
    t = good_tensors(1, 480, 640);
    t.fused.uint8 = false;
    expect_refused(t, "fused tensor that is not uint8");
    t = good_tensors(1, 480, 640);
    t.vis.shape = {1, 480, 640, 4};
    expect_refused(t, "vis (1, 480, 640, 4)");
    t = good_tensors(1, 480, 640);
    t.fused.shape = {1, 240, 320, 3};
    expect_refused(t, "one frame size");
    t = good_tensors(1, 480, 640);
    t.vis.shape = {1, 480, 640};
    expect_refused(t, "vis (1, 480, 640)");
    t = good_tensors(1, 480, 640);
    t.fused.present = false;
    expect_refused(t, "no tensor fused");
    t = good_tensors(1, 480, 640);
    t.vis.input = false;
    expect_refused(t, "vis as an output");
    t = good_tensors(1, 480, 640);
    t.io_tensors = 4;
    expect_refused(t, "4 input/output tensors");
    t = good_tensors(-1, 480, 640);
    t.fused.shape[0] = 2;
    expect_refused(t, "batch axes differ");
    return failures;
}

// One rounding rule for host and device (pixel_math.hpp): clamp, then half up; 16-bit samples at any address.
int rounding() {
    EXPECT(px::round_u8(2.5f) == 3 && px::round_u8(3.5f) == 4, "half up, not to even: %d %d", px::round_u8(2.5f),
           px::round_u8(3.5f));
    EXPECT(px::round_u8(0.49f) == 0 && px::round_u8(0.5f) == 1 && px::round_u8(254.5f) == 255, "edges");
    EXPECT(px::round_u8(-3.0f) == 0 && px::round_u8(300.0f) == 255 && px::round_u8(NAN) == 0, "clamp and NaN");
    // The warp rounds with the same rule: VIS x = 1 samples IR x = 0.5, between 10 and 15: 12.5 -> 13.
    const uint8_t ir[2] = {10, 15};
    const double half[9] = {1, 0, 0.5, 0, 1, 0, 0, 0, 1};
    const Registration r = make_registration(half, 2, 1, 2, 1);
    EXPECT(px::warp_pixel(r.vis_to_ir, 1, 0, ir, 2, 1) == 13, "warp tie %d", px::warp_pixel(r.vis_to_ir, 1, 0, ir, 2, 1));
    const uint8_t bytes[5] = {0xff, 0x34, 0x12, 0x78, 0x56};
    EXPECT(px::load_u16le(bytes + 1) == 0x1234 && px::load_u16le(bytes + 3) == 0x5678, "odd-address 16-bit loads");
    // A GRAY16 frame with an odd stride (rows start at odd addresses) gives the packed frame's grey levels.
    const int w = 37, h = 5;
    std::vector<uint16_t> packed(w * h);
    for (int i = 0; i < w * h; ++i) packed[i] = static_cast<uint16_t>((i * 7919) % 4096 + 100);
    std::vector<uint8_t> odd(1 + static_cast<size_t>(2 * w + 1) * h, 0);
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
            uint8_t* p = odd.data() + 1 + y * (2 * w + 1) + 2 * x;
            p[0] = packed[y * w + x] & 0xff;
            p[1] = packed[y * w + x] >> 8;
        }
    std::vector<uint8_t> a, b;
    ir_to_grey8(frame(packed.data(), w, h, MAEFUSE_FORMAT_GRAY16), a);
    maefuse_frame f = frame(odd.data() + 1, w, h, MAEFUSE_FORMAT_GRAY16);
    f.stride = 2 * w + 1;
    ir_to_grey8(f, b);
    EXPECT(a == b, "odd stride and offset change the 16-bit stretch");
    return failures;
}
}  // namespace

// The rule offline: each VIS frame against the latest IR frame at or before it and the first one after it, exactly
// the two maefusemux holds; pairs, unpaired and reuse counts as the shared cases expect.
int pairing_rule(const char* cases_path) {
    std::ifstream in(cases_path);
    EXPECT(in.good(), "cannot read %s", cases_path);
    if (!in.good()) return failures;
    const nlohmann::json doc = nlohmann::json::parse(in);
    for (const auto& c : doc.at("cases")) {
        const std::string name = c.at("name");
        const auto ir = c.at("ir_ns").get<std::vector<int64_t>>();
        const auto vis = c.at("vis_ns").get<std::vector<int64_t>>();
        const int64_t offset = c.at("ir_offset_ns");
        auto period = [](const nlohmann::json& rate) {
            return int64_t{1000000000} * rate[1].get<int64_t>() / rate[0].get<int64_t>();
        };
        const int64_t tolerance = c.at("tolerance_ns").is_null()
                                      ? maefuse_pairing::default_tolerance(period(c.at("ir_rate")), period(c.at("vis_rate")))
                                      : c.at("tolerance_ns").get<int64_t>();
        std::vector<std::vector<int64_t>> pairs;
        std::vector<bool> used(ir.size(), false);
        int64_t reused = 0, last = -1;
        size_t after = 0;  // index of the first IR frame after the VIS time
        for (size_t j = 0; j < vis.size(); ++j) {
            while (after < ir.size() && ir[after] + offset <= vis[j]) ++after;
            const bool has_held = after > 0, has_next = after < ir.size();
            const auto choice = maefuse_pairing::choose(has_held, has_held ? ir[after - 1] + offset : 0, has_next,
                                                        has_next ? ir[after] + offset : 0, vis[j], tolerance);
            if (choice == maefuse_pairing::Choice::none) continue;
            const int64_t i = choice == maefuse_pairing::Choice::held ? int64_t(after) - 1 : int64_t(after);
            pairs.push_back({int64_t(j), i});
            if (i == last) ++reused;
            last = i;
            used[size_t(i)] = true;
        }
        const int64_t ir_unpaired = std::count(used.begin(), used.end(), false);
        EXPECT(pairs == c.at("pairs").get<std::vector<std::vector<int64_t>>>(), "case %s: pairs differ", name.c_str());
        EXPECT(int64_t(vis.size() - pairs.size()) == c.at("vis_unpaired").get<int64_t>(), "case %s", name.c_str());
        EXPECT(ir_unpaired == c.at("ir_unpaired").get<int64_t>(), "case %s", name.c_str());
        EXPECT(reused == c.at("ir_reused").get<int64_t>(), "case %s", name.c_str());
    }
    return failures;
}

int main(int argc, char** argv) {
    const std::string which = argc > 1 ? argv[1] : "";
    if (which == "pairing_rule" && argc > 2) return pairing_rule(argv[2]);
    if (which == "ir16") return ir16();
    if (which == "vis_formats") return vis_formats();
    if (which == "warp") return warp();
    if (which == "sidecar_rules") return sidecar_rules();
    if (which == "calibration_errors") return calibration_errors();
    if (which == "version_parts") return version_parts_case();
    if (which == "engine_tensors") return engine_tensors();
    if (which == "rounding") return rounding();
    std::fprintf(stderr, "unknown case %s\n", which.c_str());
    return 2;
}
