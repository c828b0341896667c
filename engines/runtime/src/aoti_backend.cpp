// CPU backend: an AOTInductor package (.pt2 from `maefuse-export --aoti`) loaded with libtorch's
// AOTIModelPackageLoader. The package holds the network and the official processing (uint8 in, uint8 out), so this
// file only checks the package's metadata and wraps the caller's buffers as tensors (no copies on the way in).
// Built as C++20: libtorch's headers require it.
#include "internal.hpp"

#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <cstring>
#include <fstream>

namespace maefuse::detail {

namespace {

constexpr const char* kFormat = "maefuse-aoti-uint8-v1";  // maefuse_deploy/export/aoti.py PACKAGE_FORMAT
const std::string kExportFix = " (fix: write one with maefuse-export --aoti OUT.pt2 --camera-size WxH, using the "
                               "same torch version this library was built with)";

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

class AotiBackend final : public Backend {
public:
    AotiBackend(const std::string& path, int instances) {
        if (!std::ifstream(path)) fail(MAEFUSE_ERROR_MODEL_FILE, "model file not found: " + path + kExportFix);
        std::unordered_map<std::string, std::string> metadata;
        try {
            metadata = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
        } catch (const std::exception& e) {
            fail(MAEFUSE_ERROR_MODEL_FILE, "model " + path + " is not an AOTInductor package: " +
                                               first_line(e.what()) + kExportFix);
        }
        const auto format = metadata.find("maefuse.format");
        if (format == metadata.end() || format->second != kFormat)
            fail(MAEFUSE_ERROR_MODEL_FILE, "model " + path + " is an AOTInductor package but not a maefuse one " +
                                               "(format " + (format == metadata.end() ? "missing" : format->second) +
                                               ", expected " + kFormat + ")" + kExportFix);
        try {
            width_ = std::stoi(metadata.at("maefuse.width"));
            height_ = std::stoi(metadata.at("maefuse.height"));
        } catch (const std::exception&) {
            fail(MAEFUSE_ERROR_MODEL_FILE, "model " + path + " lacks its frame size metadata" + kExportFix);
        }
        try {
            loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "model", false,
                                                                               static_cast<size_t>(instances));
        } catch (const std::exception& e) {
            fail(MAEFUSE_ERROR_MODEL_FILE, "cannot load AOTInductor package " + path + ": " + first_line(e.what()) +
                                               kExportFix);
        }
    }

    const char* name() const override { return "aoti-cpu"; }
    int width() const override { return width_; }
    int height() const override { return height_; }

    void run_host(const uint8_t* ir, const uint8_t* vis, uint8_t* out) override {
        const auto options = at::TensorOptions().dtype(at::kByte);
        // The compiled graph only reads its inputs; from_blob wraps the caller's memory without a copy.
        at::Tensor ir_t = at::from_blob(const_cast<uint8_t*>(ir), {1, height_, width_}, options);
        at::Tensor vis_t = at::from_blob(const_cast<uint8_t*>(vis), {1, height_, width_, 3}, options);
        std::vector<at::Tensor> outputs;
        try {
            outputs = loader_->run({ir_t, vis_t});
        } catch (const std::exception& e) {
            fail(MAEFUSE_ERROR_INTERNAL, std::string("AOTInductor run failed: ") + first_line(e.what()));
        }
        if (outputs.size() != 1 || outputs[0].scalar_type() != at::kByte || outputs[0].numel() != 3LL * width_ * height_)
            fail(MAEFUSE_ERROR_INTERNAL, "AOTInductor package returned an unexpected output (expected one (1, " +
                                             std::to_string(height_) + ", " + std::to_string(width_) + ", 3) uint8)");
        const at::Tensor fused = outputs[0].contiguous();
        std::memcpy(out, fused.data_ptr<uint8_t>(), static_cast<size_t>(width_) * height_ * 3);
    }

private:
    std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
    int width_ = 0, height_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_aoti_backend(const std::string& path, int instances) {
    return std::make_unique<AotiBackend>(path, instances);
}

}  // namespace maefuse::detail
