// maefusemux in real pipelines: two short videos made from real pairs at 25 and 30 fps, and its errors.
//   test_element CASE PACKAGE.pt2 SAMPLES_DIR SAMPLE_OUT_DIR WORK_DIR
// GST_PLUGIN_PATH must name the folder holding libgstmaefuse.so (ctest sets it).
#include "expect.hpp"
#include <gst/app/gstappsink.h>
#include <gst/gst.h>

#include <stb_image.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kStems = {"00537D", "01023N"};  // a day and a night pair
constexpr int kIrPerPair = 5, kVisPerPair = 6;  // 0.2 s per pair at 25 and 30 fps

GstElement* launch(const std::string& description) {
    GError* error = nullptr;
    GstElement* pipeline = gst_parse_launch(description.c_str(), &error);
    if (!pipeline || error) {
        std::fprintf(stderr, "cannot build pipeline: %s\n  %s\n", error ? error->message : "?", description.c_str());
        std::exit(1);
    }
    return pipeline;
}

// Runs to EOS or an error; returns the error message ("" at EOS).
std::string run(GstElement* pipeline, GstAppSink* sink = nullptr, std::vector<GstSample*>* samples = nullptr) {
    gst_element_set_state(pipeline, GST_STATE_PLAYING);
    GstBus* bus = gst_element_get_bus(pipeline);
    std::string message;
    for (;;) {
        if (sink) {
            GstSample* sample = gst_app_sink_try_pull_sample(sink, 10 * GST_MSECOND);
            if (sample) samples->push_back(sample);
        }
        GstMessage* msg = gst_bus_timed_pop_filtered(bus, sink ? 0 : 60 * GST_SECOND,
                                                     static_cast<GstMessageType>(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
        if (!msg) {
            if (sink) continue;
            message = "timed out";
            break;
        }
        if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
            GError* error = nullptr;
            gchar* debug = nullptr;
            gst_message_parse_error(msg, &error, &debug);
            message = std::string(GST_OBJECT_NAME(msg->src)) + ": " + error->message + " | " + (debug ? debug : "");
            g_clear_error(&error);
            g_free(debug);
        }
        gst_message_unref(msg);
        break;
    }
    if (sink)  // samples still queued in the sink at EOS
        while (GstSample* sample = gst_app_sink_try_pull_sample(sink, 0)) samples->push_back(sample);
    gst_object_unref(bus);
    gst_element_set_state(pipeline, GST_STATE_NULL);
    return message;
}

// Writes the frames of pair after pair as numbered PNG files (one per frame) and encodes them losslessly.
void make_video(const fs::path& samples, const fs::path& work, const char* role, int per_pair, int fps,
                const char* format) {
    const fs::path frames = work / (std::string(role) + "-frames");
    fs::create_directories(frames);
    int index = 0;
    for (const auto& stem : kStems)
        for (int i = 0; i < per_pair; ++i) {
            char name[32];
            std::snprintf(name, sizeof(name), "%04d.png", index++);
            fs::copy_file(samples / (std::string(role) == "ir" ? "ir" : "vi") / (stem + ".png"), frames / name,
                          fs::copy_options::overwrite_existing);
        }
    GstElement* pipeline = launch("multifilesrc location=" + (frames / "%04d.png").string() +
                                  " index=0 caps=image/png,framerate=" + std::to_string(fps) +
                                  "/1 ! pngdec ! videoconvert ! video/x-raw,format=" + format +
                                  " ! matroskamux ! filesink location=" + (work / (std::string(role) + ".mkv")).string());
    const std::string error = run(pipeline);
    gst_object_unref(pipeline);
    if (!error.empty()) {
        std::fprintf(stderr, "cannot make the %s video: %s\n", role, error.c_str());
        std::exit(1);
    }
}

int videos(const std::string& package, const fs::path& samples, const fs::path& sample_out, const fs::path& work) {
    fs::remove_all(work);
    fs::create_directories(work);
    make_video(samples, work, "ir", kIrPerPair, 25, "GRAY8");
    make_video(samples, work, "vis", kVisPerPair, 30, "BGR");
    GstElement* pipeline = launch(
        "maefusemux name=m model=" + package + " ! appsink name=out sync=false max-buffers=100 "
        "filesrc location=" + (work / "ir.mkv").string() + " ! matroskademux ! queue ! m.ir "
        "filesrc location=" + (work / "vis.mkv").string() + " ! matroskademux ! queue ! m.vis");
    GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "out");
    std::vector<GstSample*> samples_out;
    const std::string error = run(pipeline, GST_APP_SINK(sink), &samples_out);
    EXPECT(error.empty(), "pipeline error: %s", error.c_str());

    const size_t expected = kStems.size() * kVisPerPair;
    std::printf("IR video %zu frames at 25 fps, VIS video %zu frames at 30 fps -> %zu fused frames\n",
                kStems.size() * kIrPerPair, expected, samples_out.size());
    EXPECT(samples_out.size() == expected, "got %zu frames, want one per VIS frame (%zu)", samples_out.size(), expected);

    std::vector<std::vector<uint8_t>> references;  // the sample's output per pair, RGB
    for (const auto& stem : kStems) {
        int w, h, c;
        uint8_t* data = stbi_load((sample_out / (stem + ".png")).c_str(), &w, &h, &c, 3);
        EXPECT(data, "cannot read the sample's output for %s", stem.c_str());
        references.emplace_back(data, data + (data ? w * h * 3 : 0));
        stbi_image_free(data);
    }
    GstClockTime previous = GST_CLOCK_TIME_NONE;
    for (size_t j = 0; j < samples_out.size(); ++j) {
        GstBuffer* buffer = gst_sample_get_buffer(samples_out[j]);
        const GstClockTime pts = GST_BUFFER_PTS(buffer);
        const GstClockTime want = gst_util_uint64_scale(j, GST_SECOND, 30);
        EXPECT(previous == GST_CLOCK_TIME_NONE || pts > previous, "frame %zu out of order", j);
        EXPECT(pts + GST_MSECOND >= want && pts <= want + GST_MSECOND, "frame %zu at %" GST_TIME_FORMAT ", want %"
               GST_TIME_FORMAT, j, GST_TIME_ARGS(pts), GST_TIME_ARGS(want));
        previous = pts;
        GstCaps* caps = gst_sample_get_caps(samples_out[j]);
        GstStructure* s = gst_caps_get_structure(caps, 0);
        EXPECT(std::string(gst_structure_get_string(s, "format")) == "BGR", "output format");
        GstMapInfo map;
        gst_buffer_map(buffer, &map, GST_MAP_READ);
        const auto& reference = references[std::min(j / kVisPerPair, references.size() - 1)];
        int worst = 0;
        if (map.size == reference.size())
            for (size_t i = 0; i < map.size; i += 3)
                for (int k = 0; k < 3; ++k)
                    worst = std::max(worst, std::abs(int(map.data[i + k]) - int(reference[i + 2 - k])));  // BGR vs RGB
        else
            worst = 256;
        gst_buffer_unmap(buffer, &map);
        EXPECT(worst == 0, "frame %zu (pair %s) differs from the sample's output by %d", j,
               kStems[std::min(j / kVisPerPair, kStems.size() - 1)].c_str(), worst);
        gst_sample_unref(samples_out[j]);
    }
    std::printf("timestamps increasing at 1/30 s; every frame equals the C++ sample's output for its pair: %s\n",
                failures ? "NO" : "yes");
    gst_object_unref(sink);
    gst_object_unref(pipeline);
    return failures;
}

void expect_bus_error(const std::string& description, const std::string& needle, const char* what) {
    GstElement* pipeline = launch(description);
    const std::string error = run(pipeline);
    gst_object_unref(pipeline);
    std::printf("%s -> %s\n", what, error.c_str());
    EXPECT(error.find("maefusemux") != std::string::npos || error.find("m:") == 0, "%s: no element error", what);
    EXPECT(error.find(needle) != std::string::npos, "%s: error lacks '%s'", what, needle.c_str());
}

int missing_model(const std::string& package) {
    const std::string tail = " ! fakesink videotestsrc num-buffers=3 ! video/x-raw,format=GRAY8,width=640,height=480 "
                             "! m.ir videotestsrc num-buffers=3 ! video/x-raw,format=BGR,width=640,height=480 ! m.vis";
    expect_bus_error("maefusemux name=m model=/nonexistent/model.pt2" + tail, "not found", "missing model file");
    expect_bus_error("maefusemux name=m" + tail, "no model given", "no model property");
    expect_bus_error("maefusemux name=m model=" + package + " homography=/nonexistent/cal.json" + tail,
                     "calibration file not found", "missing calibration");
    return failures;
}

int mismatched_caps(const std::string& package) {
    expect_bus_error("maefusemux name=m model=" + package + " ! fakesink "
                     "videotestsrc num-buffers=3 ! video/x-raw,format=GRAY8,width=320,height=240,framerate=25/1 ! m.ir "
                     "videotestsrc num-buffers=3 ! video/x-raw,format=BGR,width=640,height=480,framerate=30/1 ! m.vis",
                     "IR stream is 320x240", "IR smaller than VIS, no calibration");
    expect_bus_error("maefusemux name=m model=" + package + " ! fakesink "
                     "videotestsrc num-buffers=3 ! video/x-raw,format=GRAY8,width=640,height=480,framerate=25/1 ! m.ir "
                     "videotestsrc num-buffers=3 ! video/x-raw,format=BGR,width=320,height=240,framerate=30/1 ! m.vis",
                     "model runs at 640x480", "VIS at another size than the model");
    return failures;
}

}  // namespace

int main(int argc, char** argv) {
    gst_init(&argc, &argv);
    if (argc < 6) {
        std::fprintf(stderr, "usage: test_element CASE PACKAGE SAMPLES SAMPLE_OUT WORK\n");
        return 2;
    }
    if (!gst_element_factory_find("maefusemux")) {
        std::fprintf(stderr, "maefusemux not found: set GST_PLUGIN_PATH to the build's gst-plugins folder\n");
        return 1;
    }
    const std::string which = argv[1], package = argv[2];
    if (which == "videos") return videos(package, argv[3], argv[4], argv[5]);
    if (which == "missing_model") return missing_model(package);
    if (which == "mismatched_caps") return mismatched_caps(package);
    std::fprintf(stderr, "unknown case %s\n", which.c_str());
    return 2;
}
