// OpenVINO extension: the op maefuse::Int8Attention, softmax(scale Q K^T) V with both products in int8
// (int8_attention.hpp). maefuse_deploy/backends/openvino_attention.py builds this library, loads it into the Core
// and puts the op in place of the softmax attentions it computes exactly; the CPU plugin runs it through evaluate()
// inside its own TBB arena, so the kernel's tasks share the plugin's threads instead of competing with them (a
// first version on its own std::threads ran 0.6 s slower a pair than the stock op).
#include <tbb/parallel_for.h>

#include <string>
#include <utility>

#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/op/op.hpp>

#include "int8_attention.hpp"

namespace maefuse {

// Layouts (the `layout` and `output` attributes), why two: OpenVINO's own attention reads Q, K and V through the
// graph's head transposes without copying them; an op run through evaluate() gets them materialized (0.07 s a
// maefuse-l640 pair). So the op can read the qkv projection's output itself and write what the output projection
// reads:
//   layout "heads_first": inputs Q, K, V, each [..., N, 64] (self-attention: one shape);
//   layout "packed_qkv":  one input [B, N, 3, H, 64], the qkv projection's output reshaped;
//   output "heads_first": [..., N, 64] ([B, H, N, 64] from packed qkv);
//   output "tokens_first": [B, N, H, 64] (rank 4 only).
class Int8Attention : public ov::op::Op {
 public:
  OPENVINO_OP("Int8Attention", "maefuse");

  Int8Attention() = default;
  Int8Attention(const ov::OutputVector& inputs, float scale, std::string layout, std::string output)
      : Op(inputs), scale_(scale), layout_(std::move(layout)), output_(std::move(output)) {
    constructor_validate_and_infer_types();
  }

  void validate_and_infer_types() override {
    NODE_VALIDATION_CHECK(this, layout_ == "heads_first" || layout_ == "packed_qkv",
                          "Int8Attention layout is heads_first or packed_qkv, not ", layout_);
    NODE_VALIDATION_CHECK(this, output_ == "heads_first" || output_ == "tokens_first",
                          "Int8Attention output is heads_first or tokens_first, not ", output_);
    const size_t count = layout_ == "packed_qkv" ? 1 : 3;
    NODE_VALIDATION_CHECK(this, get_input_size() == count, "Int8Attention ", layout_, " takes ", count, " inputs");
    const auto& shape = get_input_partial_shape(0);
    for (size_t i = 0; i < count; ++i) {
      NODE_VALIDATION_CHECK(this, get_input_element_type(i) == ov::element::f32,
                            "Int8Attention takes float32 Q, K and V");
      NODE_VALIDATION_CHECK(this, get_input_partial_shape(i).compatible(shape),
                            "Int8Attention takes Q, K and V of one shape (self-attention)");
    }
    if (shape.rank().is_dynamic()) {
      set_output_type(0, ov::element::f32, ov::PartialShape::dynamic());
      return;
    }
    const int64_t rank = shape.rank().get_length();
    NODE_VALIDATION_CHECK(this, shape[rank - 1].is_dynamic() || shape[rank - 1].get_length() == kInt8AttentionHeadDim,
                          "Int8Attention takes heads 64 wide");
    if (layout_ == "packed_qkv") {
      NODE_VALIDATION_CHECK(this, rank == 5 && shape[2].compatible(3), "Int8Attention packed_qkv takes [B, N, 3, H, 64]");
    } else {
      NODE_VALIDATION_CHECK(this, rank >= 2, "Int8Attention takes [..., tokens, 64] inputs");
      NODE_VALIDATION_CHECK(this, output_ == "heads_first" || rank == 4,
                            "Int8Attention gives tokens_first from [B, H, N, 64] inputs only");
    }
    set_output_type(0, ov::element::f32, output_shape(shape));
  }

  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& inputs) const override {
    check_new_args_count(this, inputs);
    return std::make_shared<Int8Attention>(inputs, scale_, layout_, output_);
  }

  bool visit_attributes(ov::AttributeVisitor& visitor) override {
    visitor.on_attribute("scale", scale_);
    visitor.on_attribute("layout", layout_);
    visitor.on_attribute("output", output_);
    return true;
  }

  bool has_evaluate() const override { return true; }

  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
    if (!cpu_has_avx512_vnni()) {
      OPENVINO_THROW("maefuse Int8Attention needs AVX-512 VNNI, which this CPU lacks: rebuild the cached model "
                     "(delete the maefuse-deploy cache entry)");
    }
    const ov::Shape shape = inputs[0].get_shape();
    const size_t rank = shape.size();
    size_t batches = 1, heads = 0, tokens = 0;
    if (layout_ == "packed_qkv") {
      batches = shape[0], tokens = shape[1], heads = shape[3];
    } else if (rank == 4) {
      batches = shape[0], heads = shape[1], tokens = shape[2];
    } else {
      tokens = shape[rank - 2], heads = inputs[0].get_size() / (tokens * kInt8AttentionHeadDim);
    }
    const size_t d = kInt8AttentionHeadDim;
    outputs[0].set_shape(output_shape(shape));
    const int h = static_cast<int>(heads), n = static_cast<int>(tokens);
    const float* q = inputs[0].data<const float>();
    const float *k = q + heads * d, *v = q + 2 * heads * d;
    HeadLayout in = packed_qkv_layout(h, n);
    if (layout_ == "heads_first") {
      k = inputs[1].data<const float>(), v = inputs[2].data<const float>();
      in = heads_first_layout(h, n);
    }
    const HeadLayout out = output_ == "tokens_first" ? tokens_first_layout(h, n) : heads_first_layout(h, n);
    int8_attention(q, k, v, in, outputs[0].data<float>(), out, static_cast<int>(batches), h, n, scale_,
                   [](int count, const std::function<void(int)>& body) {
                     tbb::parallel_for(0, count, [&](int index) { body(index); });
                   });
    return true;
  }

 private:
  // The output's shape from Q's (or the packed qkv's): one rule for validation (partial shapes) and evaluate()
  // (static ones). Its rank and sizes are checked in validate_and_infer_types.
  template <class Shape>
  Shape output_shape(const Shape& in) const {
    if (layout_ == "packed_qkv") {  // [B, N, 3, H, 64]
      return output_ == "tokens_first" ? Shape{in[0], in[1], in[3], in[4]} : Shape{in[0], in[3], in[1], in[4]};
    }
    return output_ == "tokens_first" ? Shape{in[0], in[2], in[1], in[3]} : in;  // [..., H, N, 64]
  }

  float scale_ = 1.f;
  std::string layout_ = "heads_first";
  std::string output_ = "heads_first";
};

}  // namespace maefuse

OPENVINO_CREATE_EXTENSIONS(
    std::vector<ov::Extension::Ptr>({std::make_shared<ov::OpExtension<maefuse::Int8Attention>>()}));
