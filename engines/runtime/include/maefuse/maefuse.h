/* maefuse C API: infrared + visible image fusion from C, C++ or any language with a C FFI.
 *
 * Every function returns a maefuse_status; on failure maefuse_last_error() gives a one-line message naming the
 * thing at fault and the fix (the message is per calling thread and stays valid until that thread's next call).
 * No function aborts on bad input: null pointers, wrong sizes, missing or foreign model files are errors.
 *
 * Frames (host memory): 8-bit channels in the byte order their format names, rows `stride` bytes apart (0 means
 * tightly packed). IR is GRAY8 or GRAY16 (little-endian; mapped to 8 bits by a linear stretch between the frame's
 * 0.5th and 99.5th percentiles, as the Python runtime does). VIS is BGR, BGRX, RGB, GRAY8 or NV12. The fused frame
 * is written in the format of the output frame (BGR, BGRX, RGB or GRAY8) at the VIS size.
 *
 * Threads: one runtime may be called from any number of threads at once; results equal serial calls. Calls never
 * change the calling thread's current CUDA device. maefuse_destroy must not overlap a call on the same runtime.
 * Streams (device frames): see maefuse_fuse_device_async and docs/cpp.md.
 */
#ifndef MAEFUSE_MAEFUSE_H
#define MAEFUSE_MAEFUSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define MAEFUSE_API __declspec(dllexport)
#else
#define MAEFUSE_API __attribute__((visibility("default")))
#endif

typedef enum maefuse_status {
    MAEFUSE_OK = 0,
    MAEFUSE_ERROR_INVALID_ARGUMENT = 1, /* null pointer, unknown format, bad stride or option */
    MAEFUSE_ERROR_MODEL_FILE = 2,       /* model file missing, unreadable, corrupt or not a maefuse model */
    MAEFUSE_ERROR_FRAME_SIZE = 3,       /* frame size differs from the model's or the calibration's */
    MAEFUSE_ERROR_INCOMPATIBLE = 4,     /* engine built for another GPU or TensorRT version (see its sidecar) */
    MAEFUSE_ERROR_UNAVAILABLE = 5,      /* this build lacks the backend or device the call needs */
    MAEFUSE_ERROR_CALIBRATION = 6,      /* homography file missing or malformed */
    MAEFUSE_ERROR_CUDA = 7,             /* a CUDA call failed */
    MAEFUSE_ERROR_INTERNAL = 8          /* the backend failed while running (message says how) */
} maefuse_status;

typedef enum maefuse_format {
    MAEFUSE_FORMAT_GRAY8 = 0,
    MAEFUSE_FORMAT_GRAY16 = 1, /* little-endian, IR only */
    MAEFUSE_FORMAT_BGR = 2,
    MAEFUSE_FORMAT_BGRX = 3,   /* 4 bytes per pixel, the 4th ignored on input and set to 255 on output */
    MAEFUSE_FORMAT_RGB = 4,
    MAEFUSE_FORMAT_NV12 = 5    /* VIS only: Y plane then interleaved UV at half size, BT.601 limited range */
} maefuse_format;

/* A frame in host memory. For NV12, `data` holds the Y plane and the UV plane follows it at `data +
 * stride * height` unless `uv_data` is set (then `uv_stride` applies, 0 meaning `stride`). */
typedef struct maefuse_frame {
    const void* data;
    int width;
    int height;
    size_t stride;
    maefuse_format format;
    const void* uv_data;
    size_t uv_stride;
} maefuse_frame;

typedef struct maefuse_output {
    void* data;
    int width;
    int height;
    size_t stride;
    maefuse_format format;
} maefuse_output;

typedef struct maefuse_options {
    /* IR-to-VIS calibration JSON (maefuse-calibrate: {"homography": 3x3 row-major, "ir_size": [w, h],
     * "vis_size": [w, h]}); NULL for frames that are already registered. */
    const char* homography_path;
    /* CUDA device for TensorRT engines; ignored by CPU packages. */
    int device;
    /* Model instances that may run at once: AOTInductor packages (0 picks 1); TensorRT engines: execution contexts
     * (0 picks 2; a dynamic-shape engine at most one per optimization profile). More instances cost memory; more
     * concurrent calls wait for a free one. */
    int instances;
    /* Run an engine whose sidecar names another GPU or TensorRT version when it was built hardware- or
     * version-compatible. */
    int allow_incompatible;
} maefuse_options;

typedef struct maefuse_runtime maefuse_runtime;

MAEFUSE_API void maefuse_options_init(maefuse_options* options);

/* Load a model: an AOTInductor package (.pt2, from `maefuse-export --aoti`) or a TensorRT engine (.engine/.plan,
 * with its .json sidecar from maefuse-build-engine). `options` may be NULL. */
MAEFUSE_API maefuse_status maefuse_create(const char* model_path, const maefuse_options* options,
                                          maefuse_runtime** out);

/* The VIS frame size the model runs at (the IR size is the calibration's, or the same). */
MAEFUSE_API maefuse_status maefuse_frame_size(const maefuse_runtime* runtime, int* width, int* height);

/* The IR frame size the runtime expects: the calibration's IR size, or the VIS size without a calibration. */
MAEFUSE_API maefuse_status maefuse_ir_frame_size(const maefuse_runtime* runtime, int* width, int* height);

/* Name of the backend in use: "aoti-cpu" or "tensorrt". */
MAEFUSE_API const char* maefuse_backend_name(const maefuse_runtime* runtime);

/* Fuse one pair of host frames into `out` (allocated by the caller at the VIS size). */
MAEFUSE_API maefuse_status maefuse_fuse(maefuse_runtime* runtime, const maefuse_frame* ir, const maefuse_frame* vis,
                                        maefuse_output* out);

/* Device frames (CUDA builds with a TensorRT engine): the same layouts in device memory of the runtime's device.
 * `stream` (a cudaStream_t of that device) orders the call: the runtime's work starts after everything queued on
 * `stream` before the call and everything queued on `stream` after the call starts after the runtime's work (the
 * work itself runs on a stream of the runtime, joined to `stream` by events). So the frames may be written by work
 * on `stream`, must stay valid until then, and the output is ready when `stream` is. NULL and cudaStreamLegacy are
 * refused (MAEFUSE_ERROR_INVALID_ARGUMENT); cudaStreamPerThread is accepted. Returns when the work is queued.
 * Returns MAEFUSE_ERROR_UNAVAILABLE in builds without CUDA or for CPU packages. */
MAEFUSE_API maefuse_status maefuse_fuse_device_async(maefuse_runtime* runtime, const maefuse_frame* ir,
                                                     const maefuse_frame* vis, maefuse_output* out, void* stream);

MAEFUSE_API void maefuse_destroy(maefuse_runtime* runtime);

/* The message of this thread's last failed call ("" when it succeeded). */
MAEFUSE_API const char* maefuse_last_error(void);

MAEFUSE_API const char* maefuse_status_name(maefuse_status status);

/* Bytes one row of `width` pixels takes in `format` when tightly packed (NV12: the Y row). */
MAEFUSE_API size_t maefuse_packed_stride(maefuse_format format, int width);

#ifdef __cplusplus
}
#endif

#endif /* MAEFUSE_MAEFUSE_H */
