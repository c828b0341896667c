// Host-side frame conversions: what the in-graph processing does not do (16-bit IR gain, VIS pixel formats,
// the output format). Everything else (colour space, normalisation) is inside the compiled graph.
#include "internal.hpp"
#include "pixel_math.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace maefuse::detail {

const char* format_name(maefuse_format format) {
    switch (format) {
        case MAEFUSE_FORMAT_GRAY8: return "GRAY8";
        case MAEFUSE_FORMAT_GRAY16: return "GRAY16";
        case MAEFUSE_FORMAT_BGR: return "BGR";
        case MAEFUSE_FORMAT_BGRX: return "BGRX";
        case MAEFUSE_FORMAT_RGB: return "RGB";
        case MAEFUSE_FORMAT_NV12: return "NV12";
    }
    return "unknown";
}

int bytes_per_pixel(maefuse_format format) {
    switch (format) {
        case MAEFUSE_FORMAT_GRAY8: return 1;
        case MAEFUSE_FORMAT_GRAY16: return 2;
        case MAEFUSE_FORMAT_BGR: return 3;
        case MAEFUSE_FORMAT_BGRX: return 4;
        case MAEFUSE_FORMAT_RGB: return 3;
        case MAEFUSE_FORMAT_NV12: return 1;
    }
    return 0;
}

namespace {

constexpr int kMaxSide = 1 << 15;

size_t stride_of(size_t stride, maefuse_format format, int width) {
    return stride ? stride : static_cast<size_t>(width) * bytes_per_pixel(format);
}

// numpy.percentile's default (linear interpolation between the two nearest ranks) from a 16-bit histogram.
double percentile(const std::vector<uint32_t>& histogram, size_t count, double q) {
    size_t below = 0;
    double frac = 0.0;
    px::percentile_position(q, count, &below, &frac);
    auto value_at = [&](size_t rank) {
        size_t seen = 0;
        for (size_t v = 0; v < histogram.size(); ++v) {
            seen += histogram[v];
            if (seen > rank) return static_cast<double>(v);
        }
        return 65535.0;
    };
    const double low = value_at(below);
    const double high = below + 1 < count ? value_at(below + 1) : low;
    return low + frac * (high - low);
}

// The caller's enum read as the int it is: a C caller may pass any int, and loading an out-of-range value as the
// C++ enum type is undefined behaviour (UBSan flags it), so the range is checked on the raw value first.
int raw_format(const maefuse_format& format) {
    static_assert(sizeof(maefuse_format) == sizeof(int), "C enums are int-sized");
    int raw;
    std::memcpy(&raw, &format, sizeof(raw));
    return raw;
}

bool known_format(int raw) { return raw >= MAEFUSE_FORMAT_GRAY8 && raw <= MAEFUSE_FORMAT_NV12; }

}  // namespace

void check_frame(const maefuse_frame* frame, const char* role, bool ir) {
    if (!frame) fail(MAEFUSE_ERROR_INVALID_ARGUMENT, std::string(role) + " frame is a null pointer");
    if (!frame->data) fail(MAEFUSE_ERROR_INVALID_ARGUMENT, std::string(role) + " frame has no data (null pointer)");
    if (frame->width <= 0 || frame->height <= 0 || frame->width > kMaxSide || frame->height > kMaxSide)
        fail(MAEFUSE_ERROR_FRAME_SIZE, std::string(role) + " frame size " + std::to_string(frame->width) + "x" +
                                           std::to_string(frame->height) + " is not a valid image size");
    const int raw = raw_format(frame->format);
    if (!known_format(raw))
        fail(MAEFUSE_ERROR_INVALID_ARGUMENT, std::string(role) + " frame format " + std::to_string(raw) +
                                                 " is not accepted (fix: IR takes GRAY8/GRAY16, VIS takes "
                                                 "BGR/BGRX/RGB/GRAY8/NV12)");
    const maefuse_format f = frame->format;
    const bool ok = ir ? (f == MAEFUSE_FORMAT_GRAY8 || f == MAEFUSE_FORMAT_GRAY16)
                       : (f == MAEFUSE_FORMAT_BGR || f == MAEFUSE_FORMAT_BGRX || f == MAEFUSE_FORMAT_RGB ||
                          f == MAEFUSE_FORMAT_GRAY8 || f == MAEFUSE_FORMAT_NV12);
    if (!ok)
        fail(MAEFUSE_ERROR_INVALID_ARGUMENT,
             std::string(role) + " frame format " + format_name(f) + " (" + std::to_string(static_cast<int>(f)) +
                 ") is not accepted (fix: IR takes GRAY8/GRAY16, VIS takes BGR/BGRX/RGB/GRAY8/NV12)");
    if (!ir && f == MAEFUSE_FORMAT_NV12 && (frame->width % 2 || frame->height % 2))
        fail(MAEFUSE_ERROR_FRAME_SIZE, "NV12 VIS frame must have an even width and height");
    const size_t packed = static_cast<size_t>(frame->width) * bytes_per_pixel(f);
    if (frame->stride != 0 && frame->stride < packed)
        fail(MAEFUSE_ERROR_INVALID_ARGUMENT, std::string(role) + " frame stride " + std::to_string(frame->stride) +
                                                 " is smaller than a row (" + std::to_string(packed) + " bytes)");
}

void check_output(const maefuse_output* out) {
    if (!out) fail(MAEFUSE_ERROR_INVALID_ARGUMENT, "output frame is a null pointer");
    if (!out->data) fail(MAEFUSE_ERROR_INVALID_ARGUMENT, "output frame has no data (null pointer)");
    if (!known_format(raw_format(out->format)))
        fail(MAEFUSE_ERROR_INVALID_ARGUMENT, "output format " + std::to_string(raw_format(out->format)) +
                                                 " is not produced (fix: use BGR, BGRX, RGB or GRAY8)");
    const maefuse_format f = out->format;
    if (f != MAEFUSE_FORMAT_BGR && f != MAEFUSE_FORMAT_BGRX && f != MAEFUSE_FORMAT_RGB && f != MAEFUSE_FORMAT_GRAY8)
        fail(MAEFUSE_ERROR_INVALID_ARGUMENT, std::string("output format ") + format_name(f) +
                                                 " is not produced (fix: use BGR, BGRX, RGB or GRAY8)");
    const size_t packed = static_cast<size_t>(out->width) * bytes_per_pixel(f);
    if (out->stride != 0 && out->stride < packed)
        fail(MAEFUSE_ERROR_INVALID_ARGUMENT, "output stride " + std::to_string(out->stride) +
                                                 " is smaller than a row (" + std::to_string(packed) + " bytes)");
}

void ir_to_grey8(const maefuse_frame& ir, std::vector<uint8_t>& grey) {
    const int w = ir.width, h = ir.height;
    const size_t stride = stride_of(ir.stride, ir.format, w);
    grey.resize(static_cast<size_t>(w) * h);
    const auto* base = static_cast<const uint8_t*>(ir.data);
    if (ir.format == MAEFUSE_FORMAT_GRAY8) {
        for (int y = 0; y < h; ++y) std::memcpy(&grey[static_cast<size_t>(y) * w], base + y * stride, w);
        return;
    }
    // GRAY16: a per-frame automatic gain between the 0.5th and 99.5th percentiles (processing.ir_to_grey8).
    std::vector<uint32_t> histogram(65536, 0);
    auto sample = [&](int x, int y) { return px::load_u16le(base + y * stride + 2 * static_cast<size_t>(x)); };
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) ++histogram[sample(x, y)];
    const size_t count = static_cast<size_t>(w) * h;
    const double low = percentile(histogram, count, 0.5), high = percentile(histogram, count, 99.5);
    float lowf = 0.0f, scale = 0.0f;
    px::gain_from_percentiles(low, high, &lowf, &scale);
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) grey[static_cast<size_t>(y) * w + x] = px::stretch16(sample(x, y), lowf, scale);
}

void vis_to_bgr(const maefuse_frame& vis, std::vector<uint8_t>& bgr) {
    const int w = vis.width, h = vis.height;
    const size_t stride = stride_of(vis.stride, vis.format, w);
    bgr.resize(static_cast<size_t>(w) * h * 3);
    const auto* base = static_cast<const uint8_t*>(vis.data);
    if (vis.format == MAEFUSE_FORMAT_NV12) {
        const auto* uv_base = vis.uv_data ? static_cast<const uint8_t*>(vis.uv_data) : base + stride * h;
        const size_t uv_stride = vis.uv_data && vis.uv_stride ? vis.uv_stride : stride;
        for (int y = 0; y < h; ++y) {
            const uint8_t* row = base + y * stride;
            const uint8_t* uv = uv_base + (y / 2) * uv_stride;
            uint8_t* dst = &bgr[static_cast<size_t>(y) * w * 3];
            for (int x = 0; x < w; ++x) px::nv12_to_bgr(row[x], uv[(x / 2) * 2], uv[(x / 2) * 2 + 1], dst + 3 * x);
        }
        return;
    }
    for (int y = 0; y < h; ++y) {
        const uint8_t* row = base + y * stride;
        uint8_t* dst = &bgr[static_cast<size_t>(y) * w * 3];
        switch (vis.format) {
            case MAEFUSE_FORMAT_BGR: std::memcpy(dst, row, static_cast<size_t>(w) * 3); break;
            case MAEFUSE_FORMAT_BGRX:
                for (int x = 0; x < w; ++x) std::memcpy(dst + 3 * x, row + 4 * x, 3);
                break;
            case MAEFUSE_FORMAT_RGB:
                for (int x = 0; x < w; ++x) {
                    dst[3 * x] = row[3 * x + 2];
                    dst[3 * x + 1] = row[3 * x + 1];
                    dst[3 * x + 2] = row[3 * x];
                }
                break;
            case MAEFUSE_FORMAT_GRAY8:
                for (int x = 0; x < w; ++x) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = row[x];
                break;
            default: fail(MAEFUSE_ERROR_INVALID_ARGUMENT, std::string("VIS format ") + format_name(vis.format));
        }
    }
}

void write_output(const uint8_t* bgr, maefuse_output& out) {
    const int w = out.width, h = out.height;
    const size_t stride = stride_of(out.stride, out.format, w);
    auto* base = static_cast<uint8_t*>(out.data);
    for (int y = 0; y < h; ++y) {
        const uint8_t* src = bgr + static_cast<size_t>(y) * w * 3;
        uint8_t* row = base + y * stride;
        switch (out.format) {
            case MAEFUSE_FORMAT_BGR: std::memcpy(row, src, static_cast<size_t>(w) * 3); break;
            case MAEFUSE_FORMAT_BGRX:
                for (int x = 0; x < w; ++x) {
                    std::memcpy(row + 4 * x, src + 3 * x, 3);
                    row[4 * x + 3] = 255;
                }
                break;
            case MAEFUSE_FORMAT_RGB:
                for (int x = 0; x < w; ++x) {
                    row[3 * x] = src[3 * x + 2];
                    row[3 * x + 1] = src[3 * x + 1];
                    row[3 * x + 2] = src[3 * x];
                }
                break;
            case MAEFUSE_FORMAT_GRAY8:  // OpenCV's BGR2GRAY weights
                for (int x = 0; x < w; ++x) row[x] = px::bgr_to_grey(src + 3 * x);
                break;
            default: fail(MAEFUSE_ERROR_INVALID_ARGUMENT, std::string("output format ") + format_name(out.format));
        }
    }
}

}  // namespace maefuse::detail
