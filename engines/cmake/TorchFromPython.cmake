# find_package(Torch) through the torch installed in the Python environment (pip wheel), so the C++ side links the
# same libtorch that compiled the AOTInductor packages. For torch's CUDA wheels the config insists on a CUDA toolkit
# and on nvrtc: point it at the machine's toolkit and at the wheel's own libnvrtc (DESIGN.md section 4).
# A function, not a macro: torch's config appends its own -gencode list (sm_50 included, which CUDA 13 refuses) to
# CMAKE_CUDA_FLAGS; the function scope keeps that away from our kernels.
function(maefuse_find_torch)
  if(NOT Python3_Interpreter_FOUND)
    message(FATAL_ERROR "maefuse: the AOTInductor backend needs the Python environment with torch "
                        "(activate the venv, or pass -DPython3_EXECUTABLE=...; -DMAEFUSE_WITH_AOTI=OFF skips it)")
  endif()
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c [=[
import glob, os, sys
import torch, torch.utils
print(torch.utils.cmake_prefix_path)
print(torch.version.cuda or "")
print(torch.__version__)
nvrtc = sorted(p for d in sys.path for p in glob.glob(os.path.join(d, "nvidia", "*", "lib", "libnvrtc.so.*"))
               if "builtins" not in p and ".alt." not in p)
print(nvrtc[0] if nvrtc else "")
]=]
    OUTPUT_VARIABLE _torch_facts RESULT_VARIABLE _torch_status ERROR_VARIABLE _torch_error
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _torch_status EQUAL 0)
    message(FATAL_ERROR "maefuse: ${Python3_EXECUTABLE} cannot import torch: ${_torch_error}")
  endif()
  string(REPLACE "\n" ";" _torch_facts "${_torch_facts}")
  list(GET _torch_facts 0 _torch_prefix)
  list(GET _torch_facts 1 _torch_cuda)
  list(GET _torch_facts 2 MAEFUSE_TORCH_VERSION)
  list(LENGTH _torch_facts _n)
  set(_nvrtc "")
  if(_n GREATER 3)
    list(GET _torch_facts 3 _nvrtc)
  endif()
  list(APPEND CMAKE_PREFIX_PATH ${_torch_prefix})
  if(_torch_cuda)
    if(NOT CUDAToolkit_ROOT)
      find_program(_maefuse_nvcc nvcc HINTS ${CMAKE_CUDA_COMPILER} /usr/local/cuda/bin)
      if(NOT _maefuse_nvcc)
        message(FATAL_ERROR "maefuse: torch ${MAEFUSE_TORCH_VERSION} is a CUDA build and its CMake config needs a "
                            "CUDA toolkit; none found (pass -DCUDAToolkit_ROOT=..., or use torch's CPU wheel)")
      endif()
      file(REAL_PATH ${_maefuse_nvcc} _nvcc_real)  # /usr/local/bin/nvcc is a link into the toolkit
      get_filename_component(_cuda_bin ${_nvcc_real} DIRECTORY)
      get_filename_component(CUDAToolkit_ROOT ${_cuda_bin} DIRECTORY)
    endif()
    set(CUDA_TOOLKIT_ROOT_DIR ${CUDAToolkit_ROOT} CACHE PATH "CUDA toolkit for torch's CMake config")
    set(CUDA_NVCC_EXECUTABLE ${CUDAToolkit_ROOT}/bin/nvcc CACHE FILEPATH "nvcc for torch's CMake config")
    if(_nvrtc AND NOT CUDA_nvrtc_LIBRARY)
      set(CUDA_nvrtc_LIBRARY ${_nvrtc})
    endif()
  endif()
  find_package(Torch REQUIRED)
  separate_arguments(TORCH_CXX_FLAGS_LIST UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  message(STATUS "maefuse: libtorch ${MAEFUSE_TORCH_VERSION} from ${_torch_prefix} (CUDA build: ${_torch_cuda})")
  set(TORCH_LIBRARIES ${TORCH_LIBRARIES} PARENT_SCOPE)
  set(TORCH_INCLUDE_DIRS ${TORCH_INCLUDE_DIRS} PARENT_SCOPE)
  set(TORCH_CXX_FLAGS_LIST ${TORCH_CXX_FLAGS_LIST} PARENT_SCOPE)
  set(MAEFUSE_TORCH_VERSION ${MAEFUSE_TORCH_VERSION} PARENT_SCOPE)
endfunction()
