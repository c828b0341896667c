// The GPU this process would run an engine on, from the CUDA runtime (builds with CUDA) or "none".
#include "internal.hpp"

#ifdef MAEFUSE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif
#ifdef MAEFUSE_HAVE_TENSORRT
#include <NvInferVersion.h>
#endif

namespace maefuse::detail {

MachineFacts machine_facts(int device) {
    MachineFacts facts;
#ifdef MAEFUSE_HAVE_TENSORRT
    facts.tensorrt_version = std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." +
                             std::to_string(NV_TENSORRT_PATCH);
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
