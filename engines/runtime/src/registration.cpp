// The IR-to-VIS calibration file written by maefuse-calibrate (maefuse_deploy/registration.py, docs/cpp.md):
// {"format": "maefuse-registration", "version": 1, "homography": [[...], [...], [...]], "ir_size": [w, h],
//  "vis_size": [w, h], ...}. The host warp matches cv2.warpPerspective(INTER_LINEAR, BORDER_CONSTANT 0) within a
// grey level (OpenCV interpolates in 1/32-pixel fixed point, this warp in float).
#include "internal.hpp"
#include "pixel_math.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <sstream>

namespace maefuse::detail {

namespace {

const char* kFix = " (fix: write it with maefuse-calibrate; format in docs/cpp.md)";

bool invert3x3(const double m[9], double inv[9]) {
    const double det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
                       m[2] * (m[3] * m[7] - m[4] * m[6]);
    if (!std::isfinite(det) || std::fabs(det) < 1e-12) return false;
    inv[0] = (m[4] * m[8] - m[5] * m[7]) / det;
    inv[1] = (m[2] * m[7] - m[1] * m[8]) / det;
    inv[2] = (m[1] * m[5] - m[2] * m[4]) / det;
    inv[3] = (m[5] * m[6] - m[3] * m[8]) / det;
    inv[4] = (m[0] * m[8] - m[2] * m[6]) / det;
    inv[5] = (m[2] * m[3] - m[0] * m[5]) / det;
    inv[6] = (m[3] * m[7] - m[4] * m[6]) / det;
    inv[7] = (m[1] * m[6] - m[0] * m[7]) / det;
    inv[8] = (m[0] * m[4] - m[1] * m[3]) / det;
    return true;
}

}  // namespace

Registration make_registration(const double ir_to_vis[9], int ir_width, int ir_height, int vis_width,
                               int vis_height) {
    Registration r{};
    if (std::fabs(ir_to_vis[8]) < 1e-12) fail(MAEFUSE_ERROR_CALIBRATION, "homography has H[2][2] == 0");
    for (int i = 0; i < 9; ++i) {
        if (!std::isfinite(ir_to_vis[i])) fail(MAEFUSE_ERROR_CALIBRATION, "homography has a non-finite entry");
        r.ir_to_vis[i] = ir_to_vis[i] / ir_to_vis[8];
    }
    if (!invert3x3(r.ir_to_vis, r.vis_to_ir)) fail(MAEFUSE_ERROR_CALIBRATION, "homography is singular");
    if (ir_width < 1 || ir_height < 1 || vis_width < 1 || vis_height < 1)
        fail(MAEFUSE_ERROR_CALIBRATION, "calibration sizes must be [width, height] > 0");
    r.ir_width = ir_width;
    r.ir_height = ir_height;
    r.vis_width = vis_width;
    r.vis_height = vis_height;
    return r;
}

Registration load_registration(const std::string& path) {
    std::ifstream file(path);
    if (!file) fail(MAEFUSE_ERROR_CALIBRATION, "calibration file not found: " + path + kFix);
    std::stringstream text;
    text << file.rdbuf();
    nlohmann::json data;
    try {
        data = nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::exception& e) {
        fail(MAEFUSE_ERROR_CALIBRATION, "calibration file " + path + " is not valid JSON: " + e.what() + kFix);
    }
    if (!data.is_object()) fail(MAEFUSE_ERROR_CALIBRATION, "calibration file " + path + " must hold a JSON object");
    if (data.contains("format") && data["format"] != "maefuse-registration")
        fail(MAEFUSE_ERROR_CALIBRATION, "calibration file " + path + " has format " + data["format"].dump() +
                                            ", not \"maefuse-registration\"" + kFix);
    if (data.contains("version") && (!data["version"].is_number_integer() || data["version"].get<int>() > 1))
        fail(MAEFUSE_ERROR_CALIBRATION, "calibration file " + path + " has version " + data["version"].dump() +
                                            "; this reader knows 1 (fix: update maefuse-deploy)");
    for (const char* key : {"homography", "ir_size", "vis_size"})
        if (!data.contains(key)) fail(MAEFUSE_ERROR_CALIBRATION, "calibration file " + path + " lacks " + key + kFix);
    double m[9];
    int ir[2], vis[2];
    try {
        const auto& rows = data["homography"];
        if (!rows.is_array() || rows.size() != 3) throw std::runtime_error("homography must be 3x3");
        for (int r = 0; r < 3; ++r) {
            if (!rows[r].is_array() || rows[r].size() != 3) throw std::runtime_error("homography must be 3x3");
            for (int c = 0; c < 3; ++c) m[r * 3 + c] = rows[r][c].get<double>();
        }
        for (auto [key, out] : {std::pair{"ir_size", ir}, std::pair{"vis_size", vis}}) {
            const auto& size = data[key];
            if (!size.is_array() || size.size() != 2) throw std::runtime_error(std::string(key) + " must be [w, h]");
            out[0] = size[0].get<int>();
            out[1] = size[1].get<int>();
        }
    } catch (const std::exception& e) {
        fail(MAEFUSE_ERROR_CALIBRATION, "calibration file " + path + " has a malformed field: " + e.what() + kFix);
    }
    try {
        return make_registration(m, ir[0], ir[1], vis[0], vis[1]);
    } catch (const Failure& e) {
        fail(MAEFUSE_ERROR_CALIBRATION, "calibration file " + path + ": " + e.what() + kFix);
    }
}

void warp_grey(const Registration& r, const uint8_t* ir, uint8_t* out) {
    for (int y = 0; y < r.vis_height; ++y)
        for (int x = 0; x < r.vis_width; ++x)
            out[static_cast<size_t>(y) * r.vis_width + x] = px::warp_pixel(r.vis_to_ir, x, y, ir, r.ir_width, r.ir_height);
}

}  // namespace maefuse::detail
