// The GPU this process would run an engine on, from the CUDA runtime (builds with CUDA) or "none", and the
// TensorRT library's version.
#include "internal.hpp"

#ifdef MAEFUSE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif
#ifdef MAEFUSE_HAVE_TENSORRT
#include <NvInferRuntime.h>
#endif

namespace maefuse::detail {

MachineFacts machine_facts(int device) {
    MachineFacts facts;
#ifdef MAEFUSE_HAVE_TENSORRT
    // The library loaded at run time, which may differ from the headers this was compiled with (a newer libnvinfer
    // on the library path); all four parts, as the sidecar records them.
    facts.tensorrt_version = std::to_string(getInferLibMajorVersion()) + "." + std::to_string(getInferLibMinorVersion()) +
                             "." + std::to_string(getInferLibPatchVersion()) + "." +
                             std::to_string(getInferLibBuildVersion());
#endif
#ifdef MAEFUSE_HAVE_CUDA
    cudaDeviceProp props{};
    const cudaError_t status = cudaGetDeviceProperties(&props, device);
    if (status != cudaSuccess) {
        facts.gpu_problem = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
        cudaGetLastError();  // clear the sticky-free error so later calls start clean
        return facts;
    }
    facts.has_gpu = true;
    facts.gpu_name = props.name;
    facts.cc_major = props.major;
    facts.cc_minor = props.minor;
#else
    (void)device;
    facts.gpu_problem = "this build has no CUDA support";
#endif
    return facts;
}

}  // namespace maefuse::detail
