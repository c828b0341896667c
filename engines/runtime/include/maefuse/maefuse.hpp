// Thin C++17 wrapper over the C API: RAII ownership and exceptions instead of status codes.
#ifndef MAEFUSE_MAEFUSE_HPP
#define MAEFUSE_MAEFUSE_HPP

#include <maefuse/maefuse.h>

#include <stdexcept>
#include <string>

namespace maefuse {

class Error : public std::runtime_error {
public:
    Error(maefuse_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
    maefuse_status status() const noexcept { return status_; }

private:
    maefuse_status status_;
};

inline void check(maefuse_status status) {
    if (status != MAEFUSE_OK) throw Error(status, maefuse_last_error());
}

class Runtime {
public:
    explicit Runtime(const std::string& model_path, const maefuse_options* options = nullptr) {
        check(maefuse_create(model_path.c_str(), options, &handle_));
    }
    ~Runtime() { maefuse_destroy(handle_); }
    Runtime(const Runtime&) = delete;
    Runtime& operator=(const Runtime&) = delete;
    Runtime(Runtime&& other) noexcept : handle_(other.handle_) { other.handle_ = nullptr; }
    Runtime& operator=(Runtime&& other) noexcept {
        if (this != &other) {
            maefuse_destroy(handle_);
            handle_ = other.handle_;
            other.handle_ = nullptr;
        }
        return *this;
    }

    int width() const { return size().first; }
    int height() const { return size().second; }
    std::pair<int, int> size() const {
        int w = 0, h = 0;
        check(maefuse_frame_size(handle_, &w, &h));
        return {w, h};
    }
    std::string backend() const { return maefuse_backend_name(handle_); }

    void fuse(const maefuse_frame& ir, const maefuse_frame& vis, maefuse_output& out) {
        check(maefuse_fuse(handle_, &ir, &vis, &out));
    }
    void fuse_device_async(const maefuse_frame& ir, const maefuse_frame& vis, maefuse_output& out, void* stream) {
        check(maefuse_fuse_device_async(handle_, &ir, &vis, &out, stream));
    }
    maefuse_runtime* get() const noexcept { return handle_; }

private:
    maefuse_runtime* handle_ = nullptr;
};

inline maefuse_frame host_frame(const void* data, int width, int height, maefuse_format format, size_t stride = 0) {
    maefuse_frame frame{};
    frame.data = data;
    frame.width = width;
    frame.height = height;
    frame.stride = stride;
    frame.format = format;
    return frame;
}

inline maefuse_output host_output(void* data, int width, int height, maefuse_format format, size_t stride = 0) {
    maefuse_output out{};
    out.data = data;
    out.width = width;
    out.height = height;
    out.stride = stride;
    out.format = format;
    return out;
}

}  // namespace maefuse

#endif  // MAEFUSE_MAEFUSE_HPP
