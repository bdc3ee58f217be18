#include "wire.h"

#include <bit>
#include <cstring>

#include "cartpole.h"

namespace seed_rl {

static_assert(std::endian::native == std::endian::little,
              "the wire is little-endian: this code copies values as they lie in memory");

namespace {

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  return count;
}

void SetShape(const std::vector<int64_t>& shape, v1::Tensor* out) {
  out->clear_shape();
  for (int64_t d : shape) out->add_shape(d);
}

}  // namespace

void EncodeFloat32(const std::vector<int64_t>& shape, const float* values, v1::Tensor* out) {
  out->set_dtype("float32");
  SetShape(shape, out);
  out->set_data(reinterpret_cast<const char*>(values), Product(shape) * sizeof(float));
}

void EncodeBool(const std::vector<int64_t>& shape, const std::vector<uint8_t>& values,
                v1::Tensor* out) {
  out->set_dtype("bool");
  SetShape(shape, out);
  out->set_data(reinterpret_cast<const char*>(values.data()), values.size());
}

std::string DecodeDiscreteActions(const v1::Tensor& tensor, int64_t num_envs, int64_t n,
                                  std::vector<int>* actions) {
  std::string shape = "[";
  for (int i = 0; i < tensor.shape_size(); ++i) {
    shape += (i ? ", " : "") + std::to_string(tensor.shape(i));
  }
  shape += "]";
  if (tensor.dtype() != "int64" || tensor.shape_size() != 1 || tensor.shape(0) != num_envs) {
    return "the learner sent actions of shape " + shape + " and dtype '" + tensor.dtype() +
           "'; expected [" + std::to_string(num_envs) + "] int64 for the action space Discrete(" +
           std::to_string(n) + ")";
  }
  if (tensor.data().size() != static_cast<size_t>(num_envs) * sizeof(int64_t)) {
    return "the learner sent actions of " + std::to_string(tensor.data().size()) +
           " bytes; [" + std::to_string(num_envs) + "] int64 is " +
           std::to_string(num_envs * 8) + " bytes";
  }
  actions->resize(num_envs);
  for (int64_t i = 0; i < num_envs; ++i) {
    int64_t value;
    std::memcpy(&value, tensor.data().data() + i * sizeof(int64_t), sizeof(int64_t));
    if (value < 0 || value >= n) {
      return "the learner sent action " + std::to_string(value) + " for environment " +
             std::to_string(i) + ", outside Discrete(" + std::to_string(n) + ")";
    }
    (*actions)[i] = static_cast<int>(value);
  }
  return "";
}

v1::Space CartPoleObservationSpace() {
  const auto high = CartPole::ObservationHigh();
  std::array<float, CartPole::kObservationSize> low;
  for (size_t i = 0; i < high.size(); ++i) low[i] = -high[i];
  const std::vector<int64_t> shape = {CartPole::kObservationSize};
  v1::Space space;
  v1::BoxSpace* box = space.mutable_box();
  box->set_dtype("float32");
  box->add_shape(CartPole::kObservationSize);
  EncodeFloat32(shape, low.data(), box->mutable_low());
  EncodeFloat32(shape, high.data(), box->mutable_high());
  return space;
}

v1::Space CartPoleActionSpace() {
  v1::Space space;
  space.mutable_discrete()->set_n(CartPole::kNumActions);  // start 0: left absent
  return space;
}

std::string StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "code " + std::to_string(static_cast<int>(code));
  }
}

}  // namespace seed_rl
