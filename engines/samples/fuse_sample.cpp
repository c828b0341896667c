// maefuse-fuse-cpp: fuse an IR image and a VIS image through the C API (via the thin C++ class) and write a PNG.
//   maefuse-fuse-cpp MODEL.pt2 IR.png VIS.png OUT.png [--homography CAL.json] [--repeat N]
// Images are read with stb_image: IR 8- or 16-bit grey (16-bit is stretched as in the Python runtime), VIS colour or
// grey. --repeat N fuses the pair N more times and prints the per-pair latency (benchmarks/cpp.md).
#include <maefuse/maefuse.hpp>

#include <stb_image.h>
#include <stb_image_write.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

struct Image {
    std::unique_ptr<void, void (*)(void*)> pixels{nullptr, stbi_image_free};
    int width = 0, height = 0;
    maefuse_format format = MAEFUSE_FORMAT_GRAY8;
};

Image read_image(const std::string& path, bool ir) {
    Image image;
    int channels = 0;
    if (!stbi_info(path.c_str(), &image.width, &image.height, &channels))
        throw std::runtime_error("cannot read image " + path + ": " + (stbi_failure_reason() ? stbi_failure_reason() : "unknown") +
                                 " (fix: check the path; PNG, JPEG, BMP and PGM are read)");
    if (ir && stbi_is_16_bit(path.c_str())) {
        image.pixels.reset(stbi_load_16(path.c_str(), &image.width, &image.height, &channels, 1));
        image.format = MAEFUSE_FORMAT_GRAY16;
    } else if (ir || channels <= 2) {
        image.pixels.reset(stbi_load(path.c_str(), &image.width, &image.height, &channels, 1));
        image.format = MAEFUSE_FORMAT_GRAY8;
    } else {
        image.pixels.reset(stbi_load(path.c_str(), &image.width, &image.height, &channels, 3));
        image.format = MAEFUSE_FORMAT_RGB;  // stb decodes to RGB order
    }
    if (!image.pixels) throw std::runtime_error("cannot decode image " + path + ": " + stbi_failure_reason());
    return image;
}

int usage() {
    std::fprintf(stderr, "usage: maefuse-fuse-cpp MODEL.pt2 IR.png VIS.png OUT.png [--homography CAL.json] "
                         "[--repeat N]\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> positional;
    std::string homography;
    int repeat = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--homography" && i + 1 < argc) {
            homography = argv[++i];
        } else if (arg == "--repeat" && i + 1 < argc) {
            repeat = std::max(0, std::atoi(argv[++i]));
        } else if (arg == "-h" || arg == "--help") {
            usage();
            return 0;
        } else if (!arg.empty() && arg[0] == '-') {
            return usage();
        } else {
            positional.push_back(arg);
        }
    }
    if (positional.size() != 4) return usage();
    try {
        maefuse_options options;
        maefuse_options_init(&options);
        options.homography_path = homography.empty() ? nullptr : homography.c_str();
        maefuse::Runtime runtime(positional[0], &options);
        const Image ir = read_image(positional[1], true);
        const Image vis = read_image(positional[2], false);
        std::vector<uint8_t> fused(static_cast<size_t>(vis.width) * vis.height * 3);
        const maefuse_frame ir_frame = maefuse::host_frame(ir.pixels.get(), ir.width, ir.height, ir.format);
        const maefuse_frame vis_frame = maefuse::host_frame(vis.pixels.get(), vis.width, vis.height, vis.format);
        maefuse_output out = maefuse::host_output(fused.data(), vis.width, vis.height, MAEFUSE_FORMAT_RGB);
        runtime.fuse(ir_frame, vis_frame, out);
        if (repeat > 0) {
            std::vector<double> ms;
            for (int i = 0; i < repeat; ++i) {
                const auto start = std::chrono::steady_clock::now();
                runtime.fuse(ir_frame, vis_frame, out);
                ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
            }
            std::sort(ms.begin(), ms.end());
            std::printf("%s %dx%d: median %.1f ms, min %.1f ms, max %.1f ms over %d pairs\n", runtime.backend().c_str(),
                        vis.width, vis.height, ms[ms.size() / 2], ms.front(), ms.back(), repeat);
        }
        const std::string tmp = positional[3] + ".tmp.png";  // written whole, then renamed
        if (!stbi_write_png(tmp.c_str(), vis.width, vis.height, 3, fused.data(), vis.width * 3) ||
            std::rename(tmp.c_str(), positional[3].c_str()) != 0) {
            std::remove(tmp.c_str());
            throw std::runtime_error("cannot write " + positional[3] + " (fix: choose a writable output folder)");
        }
        std::printf("wrote %s (%dx%d, %s)\n", positional[3].c_str(), vis.width, vis.height, runtime.backend().c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
