// ENGINE.json sidecars (maefuse_deploy/tensorrt/sidecar.py): read them and apply the same compatibility rules as the
// Python runtime before a plan is deserialised, so the user gets one line naming both sides.
#include "internal.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>

namespace maefuse::detail {

namespace {

std::string cc(int major, int minor) { return std::to_string(major) + "." + std::to_string(minor); }

}  // namespace

std::array<int, 4> version_parts(const std::string& version) {
    std::array<int, 4> parts{0, 0, 0, 0};
    const std::regex number("\\d{1,9}");
    size_t i = 0;
    for (auto it = std::sregex_iterator(version.begin(), version.end(), number);
         it != std::sregex_iterator() && i < parts.size(); ++it)
        parts[i++] = std::stoi(it->str());
    return parts;
}

std::string sidecar_path(const std::string& engine_path) { return engine_path + ".json"; }

SidecarFacts read_sidecar(const std::string& engine_path) {
    const std::string path = sidecar_path(engine_path);
    const std::string fix = " (fix: rebuild the engine with maefuse-build-engine, which writes it)";
    std::ifstream file(path);
    if (!file) fail(MAEFUSE_ERROR_MODEL_FILE, "engine " + engine_path + " has no sidecar " + path + fix);
    std::stringstream text;
    text << file.rdbuf();
    SidecarFacts facts;
    try {
        const auto data = nlohmann::json::parse(text.str());
        facts.tensorrt_version = data.at("tensorrt_version").get<std::string>();
        facts.gpu_name = data.at("gpu_name").get<std::string>();
        facts.cc_major = data.at("compute_capability").at(0).get<int>();
        facts.cc_minor = data.at("compute_capability").at(1).get<int>();
        facts.onnx_path = data.value("onnx_path", std::string());
        facts.io = data.at("io").get<std::string>();
        facts.hardware_compat = data.value("hardware_compat", false);
        facts.version_compat = data.value("version_compat", false);
        if (data.contains("input_shapes") && data["input_shapes"].contains("ir"))
            facts.input_shape_ir = data["input_shapes"]["ir"].at(1).get<std::vector<int>>();
    } catch (const nlohmann::json::exception& e) {
        fail(MAEFUSE_ERROR_MODEL_FILE, "sidecar " + path + " is not a maefuse engine sidecar: " + e.what() + fix);
    }
    return facts;
}

std::vector<std::string> check_compatibility(const SidecarFacts& sidecar, const MachineFacts& machine,
                                             bool allow_incompatible, const std::string& engine) {
    const std::string rebuild =
        "rebuild with maefuse-build-engine " + sidecar.onnx_path + " -o " + engine + " on this machine";
    std::vector<std::string> notes, problems;

    if (!machine.has_gpu) {
        problems.push_back("engine " + engine + " was built for " + sidecar.gpu_name + " (compute capability " +
                           cc(sidecar.cc_major, sidecar.cc_minor) + ") but this machine has no usable CUDA GPU (" +
                           machine.gpu_problem + ")");
    } else {
        const std::string arch = "engine " + engine + " was built for " + sidecar.gpu_name + " (compute capability " +
                                 cc(sidecar.cc_major, sidecar.cc_minor) + ") but this GPU is " + machine.gpu_name +
                                 " (compute capability " + cc(machine.cc_major, machine.cc_minor) + ")";
        const bool same_arch = sidecar.cc_major == machine.cc_major && sidecar.cc_minor == machine.cc_minor;
        if (!same_arch) {
            if (!sidecar.hardware_compat)
                problems.push_back(arch + ", and it was not built with --hardware-compat");
            else if (machine.cc_major < 8)
                problems.push_back(arch + "; hardware-compatible engines need compute capability 8.0 or newer");
            else if (!allow_incompatible)
                problems.push_back(arch + "; it was built with --hardware-compat, so allow_incompatible can override this");
            else
                notes.push_back(arch + "; running it as a hardware-compatible (Ampere+) engine, as asked");
        } else if (sidecar.gpu_name != machine.gpu_name) {
            notes.push_back(arch + ": same architecture, so it runs, but its tactics were timed on the other GPU; " +
                            rebuild + " for the best speed");
        }
    }

    if (!machine.tensorrt_version.empty()) {
        // All four parts, build number included: TensorRT's own plan check refuses a plan from another build.
        const auto built = version_parts(sidecar.tensorrt_version), here = version_parts(machine.tensorrt_version);
        if (built != here) {
            const std::string what = "engine " + engine + " was built with TensorRT " + sidecar.tensorrt_version +
                                     " but this machine has TensorRT " + machine.tensorrt_version;
            if (!sidecar.version_compat)
                problems.push_back(what + ", and it was not built with --version-compat");
            else if (here < built)
                problems.push_back(what + ", which is older; TensorRT cannot load plans from a newer version");
            else if (!allow_incompatible)
                problems.push_back(what + "; it was built with --version-compat, so allow_incompatible can override this");
            else
                notes.push_back(what + "; running it as a version-compatible engine, as asked");
        }
    }

    if (!problems.empty()) {
        std::string message;
        for (const auto& p : problems) message += (message.empty() ? "" : "; ") + p;
        fail(MAEFUSE_ERROR_INCOMPATIBLE, message + " (fix: " + rebuild + ")");
    }
    return notes;
}

}  // namespace maefuse::detail
