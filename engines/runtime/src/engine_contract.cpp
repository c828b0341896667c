// What a TensorRT engine must look like to the C++ runtime, checked on the shapes TensorRT reports before any buffer
// is sized from them (no TensorRT types here, so the rules are unit-tested without TensorRT: test_internal).
#include "internal.hpp"

namespace maefuse::detail {

namespace {

std::string shape_text(const EngineTensor& t) {
    std::string text = "(";
    for (size_t i = 0; i < t.shape.size(); ++i) text += (i ? ", " : "") + std::to_string(t.shape[i]);
    return text + ")";
}

}  // namespace

EngineGeometry check_engine_tensors(const EngineTensors& t, const std::string& path) {
    const std::string want = "uint8 inputs ir (N, H, W) and vis (N, H, W, 3) and a uint8 output fused (N, H, W, 3)";
    const std::string fix = " (fix: maefuse-export --io uint8 --camera-size WxH, then maefuse-build-engine)";
    auto refuse = [&](const std::string& what) { fail(MAEFUSE_ERROR_MODEL_FILE, "engine " + path + " " + what + fix); };
    const std::pair<const char*, const EngineTensor*> named[] = {{"ir", &t.ir}, {"vis", &t.vis}, {"fused", &t.fused}};
    for (const auto& [name, tensor] : named) {
        if (!tensor->present) refuse(std::string("has no tensor ") + name + "; the C++ runtime needs " + want);
        if (tensor->input != (name != std::string("fused")))
            refuse(std::string("has ") + name + " as an " + (tensor->input ? "input" : "output") + "; it needs " + want);
        if (!tensor->uint8) refuse(std::string("has a ") + name + " tensor that is not uint8; it needs " + want);
    }
    if (t.io_tensors != 3)
        refuse("has " + std::to_string(t.io_tensors) + " input/output tensors; the C++ runtime binds exactly " + want);
    if (t.ir.shape.size() != 3 || t.vis.shape.size() != 4 || t.fused.shape.size() != 4 || t.vis.shape[3] != 3 ||
        t.fused.shape[3] != 3)
        refuse("has ir " + shape_text(t.ir) + ", vis " + shape_text(t.vis) + ", fused " + shape_text(t.fused) +
               "; it needs " + want);
    const int64_t h = t.ir.shape[1], w = t.ir.shape[2];
    if (h <= 0 || w <= 0 || h > (1 << 15) || w > (1 << 15))
        refuse("has a frame size of " + std::to_string(w) + "x" + std::to_string(h) +
               " (dynamic or empty); the C++ runtime needs a fixed camera size");
    for (const EngineTensor* other : {&t.vis, &t.fused})
        if (other->shape[1] != h || other->shape[2] != w)
            refuse("has ir " + shape_text(t.ir) + " but " + (other == &t.vis ? "vis " : "fused ") + shape_text(*other) +
                   "; all three must be one frame size");
    const int64_t batch = t.ir.shape[0];
    for (const EngineTensor* other : {&t.vis, &t.fused})
        if (other->shape[0] != batch && !(batch < 0 && other->shape[0] < 0))
            refuse("has ir " + shape_text(t.ir) + " but " + (other == &t.vis ? "vis " : "fused ") + shape_text(*other) +
                   "; the batch axes differ");
    if (batch == 0 || batch > 1)
        fail(MAEFUSE_ERROR_MODEL_FILE, "engine " + path + " has a fixed batch of " + std::to_string(batch) +
                                           "; the C++ runtime runs one frame pair per call (fix: maefuse-build-engine "
                                           "--batch-range 1, or a range that holds 1)");
    EngineGeometry geometry;
    geometry.width = static_cast<int>(w);
    geometry.height = static_cast<int>(h);
    geometry.dynamic_batch = batch < 0;
    return geometry;
}

}  // namespace maefuse::detail
