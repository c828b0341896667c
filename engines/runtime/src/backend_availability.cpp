// Factories for backends this build lacks: a clear "unavailable" instead of a link error. The TensorRT one still
// reads the engine's sidecar first, so an engine for another GPU is named as such on any build.
#include "internal.hpp"

#include <fstream>

namespace maefuse::detail {

#ifndef MAEFUSE_HAVE_AOTI
std::unique_ptr<Backend> make_aoti_backend(const std::string& path, int) {
    fail(MAEFUSE_ERROR_UNAVAILABLE, "cannot load " + path + ": this build of maefuse has no AOTInductor backend "
                                    "(fix: configure with -DMAEFUSE_WITH_AOTI=ON in the Python venv that has torch)");
}
#endif

#ifndef MAEFUSE_HAVE_TENSORRT
std::unique_ptr<Backend> make_tensorrt_backend(const std::string& path, const maefuse_options& options) {
    if (!std::ifstream(path)) fail(MAEFUSE_ERROR_MODEL_FILE, "engine file not found: " + path);
    const SidecarFacts sidecar = read_sidecar(path);
    check_compatibility(sidecar, machine_facts(options.device), options.allow_incompatible != 0, path);
    fail(MAEFUSE_ERROR_UNAVAILABLE, "cannot load " + path + ": this build of maefuse has no TensorRT backend "
                                    "(fix: configure with -DTensorRT_ROOT=/path/to/TensorRT)");
}
#endif

}  // namespace maefuse::detail
