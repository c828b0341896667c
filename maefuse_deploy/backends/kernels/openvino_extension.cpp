// OpenVINO extension: the op maefuse::Int8Attention, softmax(scale Q K^T) V with both products in int8
// (int8_attention.hpp). maefuse_deploy/backends/openvino_attention.py builds this library, loads it into the Core
// and puts the op in place of the ScaledDotProductAttention ops it fits; the CPU plugin runs it through evaluate()
// inside its own TBB arena, so the kernel's tasks share the plugin's threads instead of competing with them (a
// first version on its own std::threads ran 0.6 s slower a pair than the stock op).
#include <tbb/parallel_for.h>

#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/op/op.hpp>

#include "int8_attention.hpp"

namespace maefuse {

class Int8Attention : public ov::op::Op {
 public:
  OPENVINO_OP("Int8Attention", "maefuse");

  Int8Attention() = default;
  Int8Attention(const ov::Output<ov::Node>& q, const ov::Output<ov::Node>& k, const ov::Output<ov::Node>& v,
                float scale)
      : Op({q, k, v}), scale_(scale) {
    constructor_validate_and_infer_types();
  }

  // Q, K, V: [..., tokens, 64] float32, all three the same shape (self-attention); out: the same.
  void validate_and_infer_types() override {
    const auto& shape = get_input_partial_shape(0);
    for (size_t i = 0; i < 3; ++i) {
      NODE_VALIDATION_CHECK(this, get_input_element_type(i) == ov::element::f32,
                            "Int8Attention takes float32 Q, K and V");
      NODE_VALIDATION_CHECK(this, get_input_partial_shape(i).compatible(shape),
                            "Int8Attention takes Q, K and V of one shape (self-attention)");
    }
    NODE_VALIDATION_CHECK(this, shape.rank().is_dynamic() || shape.rank().get_length() >= 2,
                          "Int8Attention takes [..., tokens, 64] inputs");
    if (shape.rank().is_static()) {
      const auto& width = shape[shape.rank().get_length() - 1];
      NODE_VALIDATION_CHECK(this, width.is_dynamic() || width.get_length() == kInt8AttentionHeadDim,
                            "Int8Attention takes heads 64 wide");
    }
    set_output_type(0, ov::element::f32, shape);
  }

  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& inputs) const override {
    check_new_args_count(this, inputs);
    return std::make_shared<Int8Attention>(inputs.at(0), inputs.at(1), inputs.at(2), scale_);
  }

  bool visit_attributes(ov::AttributeVisitor& visitor) override {
    visitor.on_attribute("scale", scale_);
    return true;
  }

  bool has_evaluate() const override { return true; }

  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
    if (!cpu_has_avx512_vnni()) {
      OPENVINO_THROW("maefuse Int8Attention needs AVX-512 VNNI, which this CPU lacks: rebuild the cached model "
                     "(delete the maefuse-deploy cache entry)");
    }
    const ov::Shape shape = inputs[0].get_shape();
    outputs[0].set_shape(shape);
    const size_t tokens = shape[shape.size() - 2];
    const size_t heads = inputs[0].get_size() / (tokens * kInt8AttentionHeadDim);
    int8_attention(inputs[0].data<const float>(), inputs[1].data<const float>(), inputs[2].data<const float>(),
                   outputs[0].data<float>(), static_cast<int>(heads), static_cast<int>(tokens), scale_,
                   [](int count, const std::function<void(int)>& body) {
                     tbb::parallel_for(0, count, [&](int index) { body(index); });
                   });
    return true;
  }

 private:
  float scale_ = 1.f;
};

}  // namespace maefuse

OPENVINO_CREATE_EXTENSIONS(
    std::vector<ov::Extension::Ptr>({std::make_shared<ov::OpExtension<maefuse::Int8Attention>>()}));
