// The C API: argument checks, host processing around the backend, and exceptions turned into status + message.
#include "internal.hpp"

#include <cstring>
#include <new>
#include <optional>

#ifdef MAEFUSE_HAVE_CUDA
#include "../../cuda/kernels.h"
#endif

using namespace maefuse::detail;

struct maefuse_runtime {
    std::unique_ptr<Backend> backend;
    std::optional<Registration> registration;
    std::string backend_name;
};

namespace {

thread_local std::string last_error;

template <class Body>
maefuse_status guarded(Body&& body) noexcept {
    try {
        body();
        last_error.clear();
        return MAEFUSE_OK;
    } catch (const Failure& e) {
        last_error = e.what();
        return e.status;
    } catch (const std::bad_alloc&) {
        last_error = "out of memory";
        return MAEFUSE_ERROR_INTERNAL;
    } catch (const std::exception& e) {
        last_error = std::string("internal error: ") + e.what();
        return MAEFUSE_ERROR_INTERNAL;
    } catch (...) {
        last_error = "internal error: unknown exception";
        return MAEFUSE_ERROR_INTERNAL;
    }
}

bool ends_with(const std::string& text, const std::string& suffix) {
    return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string wh(int w, int h) { return std::to_string(w) + "x" + std::to_string(h); }

// The sizes a pair must have: VIS at the model size; IR at the calibration's IR size, or the VIS size.
void check_sizes(const maefuse_runtime& rt, const maefuse_frame& ir, const maefuse_frame& vis,
                 const maefuse_output& out) {
    const int w = rt.backend->width(), h = rt.backend->height();
    if (vis.width != w || vis.height != h)
        fail(MAEFUSE_ERROR_FRAME_SIZE, "VIS frame is " + wh(vis.width, vis.height) + " but the model runs at " +
                                           wh(w, h) + " (fix: export the model with --camera-size " + wh(vis.width, vis.height) +
                                           ", or scale the VIS stream to " + wh(w, h) + ")");
    const int iw = rt.registration ? rt.registration->ir_width : w;
    const int ih = rt.registration ? rt.registration->ir_height : h;
    if (ir.width != iw || ir.height != ih)
        fail(MAEFUSE_ERROR_FRAME_SIZE,
             "IR frame is " + wh(ir.width, ir.height) + " but " +
                 (rt.registration ? "the calibration is for IR " + wh(iw, ih) +
                                        " (fix: calibrate at this IR size with maefuse-calibrate)"
                                  : "the VIS frame is " + wh(w, h) +
                                        " (fix: pass a calibration with the homography option, or register the pair)"));
    if (out.width != w || out.height != h)
        fail(MAEFUSE_ERROR_FRAME_SIZE, "output frame is " + wh(out.width, out.height) + " but the fused frame is " +
                                           wh(w, h) + " (the VIS size)");
}

}  // namespace

namespace maefuse::detail {
void Backend::run_device(const DeviceSteps&, void*) {
    fail(MAEFUSE_ERROR_UNAVAILABLE, std::string(name()) +
                                        " runs on host frames (fix: use maefuse_fuse, or a TensorRT engine for device frames)");
}
}  // namespace maefuse::detail

extern "C" {

void maefuse_options_init(maefuse_options* options) {
    if (!options) return;
    std::memset(options, 0, sizeof(*options));
}

maefuse_status maefuse_create(const char* model_path, const maefuse_options* options, maefuse_runtime** out) {
    return guarded([&] {
        if (!out) fail(MAEFUSE_ERROR_INVALID_ARGUMENT, "maefuse_create: the output handle pointer is null");
        *out = nullptr;
        if (!model_path || !*model_path) fail(MAEFUSE_ERROR_INVALID_ARGUMENT, "maefuse_create: no model path given");
        maefuse_options defaults;
        maefuse_options_init(&defaults);
        const maefuse_options& opts = options ? *options : defaults;
        if (opts.instances < 0 || opts.instances > 64)
            fail(MAEFUSE_ERROR_INVALID_ARGUMENT, "instances must be 0..64, got " + std::to_string(opts.instances));
        const std::string path(model_path);
        auto runtime = std::make_unique<maefuse_runtime>();
        if (ends_with(path, ".pt2")) {
            runtime->backend = make_aoti_backend(path, opts.instances ? opts.instances : 1);
        } else if (ends_with(path, ".engine") || ends_with(path, ".plan") || ends_with(path, ".trt")) {
            runtime->backend = make_tensorrt_backend(path, opts);
        } else {
            fail(MAEFUSE_ERROR_MODEL_FILE, "model " + path +
                                               " is neither an AOTInductor package (.pt2) nor a TensorRT engine "
                                               "(.engine/.plan) (fix: maefuse-export --aoti OUT.pt2, or "
                                               "maefuse-build-engine)");
        }
        if (opts.homography_path) {
            runtime->registration = load_registration(opts.homography_path);
            const auto& r = *runtime->registration;
            if (r.vis_width != runtime->backend->width() || r.vis_height != runtime->backend->height())
                fail(MAEFUSE_ERROR_CALIBRATION, std::string("calibration ") + opts.homography_path + " is for VIS " +
                                                    wh(r.vis_width, r.vis_height) + " but the model runs at " +
                                                    wh(runtime->backend->width(), runtime->backend->height()) +
                                                    " (fix: calibrate at the model's VIS size)");
        }
        runtime->backend_name = runtime->backend->name();
        *out = runtime.release();
    });
}

maefuse_status maefuse_frame_size(const maefuse_runtime* runtime, int* width, int* height) {
    return guarded([&] {
        if (!runtime || !width || !height) fail(MAEFUSE_ERROR_INVALID_ARGUMENT, "maefuse_frame_size: null pointer");
        *width = runtime->backend->width();
        *height = runtime->backend->height();
    });
}

maefuse_status maefuse_ir_frame_size(const maefuse_runtime* runtime, int* width, int* height) {
    return guarded([&] {
        if (!runtime || !width || !height) fail(MAEFUSE_ERROR_INVALID_ARGUMENT, "maefuse_ir_frame_size: null pointer");
        *width = runtime->registration ? runtime->registration->ir_width : runtime->backend->width();
        *height = runtime->registration ? runtime->registration->ir_height : runtime->backend->height();
    });
}

const char* maefuse_backend_name(const maefuse_runtime* runtime) {
    return runtime ? runtime->backend_name.c_str() : "";
}

maefuse_status maefuse_fuse(maefuse_runtime* runtime, const maefuse_frame* ir, const maefuse_frame* vis,
                            maefuse_output* out) {
    return guarded([&] {
        if (!runtime) fail(MAEFUSE_ERROR_INVALID_ARGUMENT, "maefuse_fuse: the runtime is a null pointer");
        check_frame(ir, "IR", true);
        check_frame(vis, "VIS", false);
        check_output(out);
        check_sizes(*runtime, *ir, *vis, *out);
        const int w = runtime->backend->width(), h = runtime->backend->height();
        std::vector<uint8_t> ir_grey, ir_model, vis_bgr, fused(static_cast<size_t>(w) * h * 3);
        ir_to_grey8(*ir, ir_grey);
        if (runtime->registration) {
            ir_model.resize(static_cast<size_t>(w) * h);
            warp_grey(*runtime->registration, ir_grey.data(), ir_model.data());
        } else {
            ir_model.swap(ir_grey);
        }
        vis_to_bgr(*vis, vis_bgr);
        runtime->backend->run_host(ir_model.data(), vis_bgr.data(), fused.data());
        write_output(fused.data(), *out);
    });
}

maefuse_status maefuse_fuse_device_async(maefuse_runtime* runtime, const maefuse_frame* ir, const maefuse_frame* vis,
                                         maefuse_output* out, void* stream) {
    return guarded([&] {
        if (!runtime) fail(MAEFUSE_ERROR_INVALID_ARGUMENT, "maefuse_fuse_device_async: the runtime is a null pointer");
        check_frame(ir, "IR", true);
        check_frame(vis, "VIS", false);
        check_output(out);
        check_sizes(*runtime, *ir, *vis, *out);
#ifdef MAEFUSE_HAVE_CUDA
        if (is_legacy_default_stream(stream))
            fail(MAEFUSE_ERROR_INVALID_ARGUMENT,
                 "maefuse_fuse_device_async: the stream is the legacy default stream (NULL or cudaStreamLegacy) "
                 "(fix: pass a stream of your own, or cudaStreamPerThread)");
        if (!runtime->backend->runs_on_device())
            fail(MAEFUSE_ERROR_UNAVAILABLE, std::string(runtime->backend->name()) +
                                                " runs on host frames (fix: use maefuse_fuse, or a TensorRT engine "
                                                "for device frames)");
        const int w = runtime->backend->width(), h = runtime->backend->height();
        const Registration* registration = runtime->registration ? &*runtime->registration : nullptr;
        // The backend runs both steps on its slot's stream with the slot's scratch (ordered with the caller's
        // stream by events), so no buffer is shared between streams.
        DeviceSteps steps;
        steps.prepare = [&](DeviceScratch& scratch, uint8_t* ir_model, uint8_t* vis_bgr, void* slot_stream) {
            check_cuda(prepare_device_pair(*ir, *vis, registration, w, h, scratch, ir_model, vis_bgr, slot_stream),
                       "preparing device frames");
        };
        steps.finish = [&](const uint8_t* fused, void* slot_stream) {
            check_cuda(write_device_output(fused, *out, slot_stream), "writing the fused device frame");
        };
        runtime->backend->run_device(steps, stream);
#else
        (void)stream;
        fail(MAEFUSE_ERROR_UNAVAILABLE, "this build of maefuse has no CUDA support (fix: configure on a machine "
                                        "with the CUDA toolkit; maefuse_fuse takes host frames)");
#endif
    });
}

void maefuse_destroy(maefuse_runtime* runtime) { delete runtime; }

const char* maefuse_last_error(void) { return last_error.c_str(); }

const char* maefuse_status_name(maefuse_status status) {
    int raw;  // any int may come from C; switch on the raw value (an out-of-range enum load is undefined in C++)
    std::memcpy(&raw, &status, sizeof(raw));
    switch (raw) {
        case MAEFUSE_OK: return "ok";
        case MAEFUSE_ERROR_INVALID_ARGUMENT: return "invalid argument";
        case MAEFUSE_ERROR_MODEL_FILE: return "model file";
        case MAEFUSE_ERROR_FRAME_SIZE: return "frame size";
        case MAEFUSE_ERROR_INCOMPATIBLE: return "incompatible engine";
        case MAEFUSE_ERROR_UNAVAILABLE: return "unavailable";
        case MAEFUSE_ERROR_CALIBRATION: return "calibration";
        case MAEFUSE_ERROR_CUDA: return "cuda";
        case MAEFUSE_ERROR_INTERNAL: return "internal";
    }
    return "unknown status";
}

size_t maefuse_packed_stride(maefuse_format format, int width) {
    int raw;
    std::memcpy(&raw, &format, sizeof(raw));
    if (raw < MAEFUSE_FORMAT_GRAY8 || raw > MAEFUSE_FORMAT_NV12 || width <= 0) return 0;
    return static_cast<size_t>(width) * bytes_per_pixel(format);
}

}  // extern "C"
