// The messages of docs/protocol.md that this actor writes and reads: Tensors (dtype name,
// shape, little-endian bytes in C order), CartPole-v1's observation and action spaces as
// the learner compares them, and the names of gRPC status codes for messages.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <string>
#include <vector>

#include "seed_rl/v1/seed_rl.pb.h"

namespace seed_rl {

// HandshakeRequest.protocol_version (ProtocolVersion.PROTOCOL_VERSION_1).
constexpr uint32_t kProtocolVersion = v1::PROTOCOL_VERSION_1;
constexpr const char* kSessionMetadataKey = "seed-rl-session";
constexpr const char* kAuthMetadataKey = "authorization";

// Fill `out` with a float32 tensor of `shape` from `values` (prod(shape) of them).
void EncodeFloat32(const std::vector<int64_t>& shape, const float* values, v1::Tensor* out);
// Fill `out` with a bool tensor of `shape`: one byte per value, 0 or 1.
void EncodeBool(const std::vector<int64_t>& shape, const std::vector<uint8_t>& values,
                v1::Tensor* out);

// The K actions of a StepResponse for a Discrete(n) action space: an int64 tensor of shape
// [K], each value in [0, n). Returns "" and fills `actions`, or says what is wrong.
std::string DecodeDiscreteActions(const v1::Tensor& tensor, int64_t num_envs, int64_t n,
                                  std::vector<int>* actions);

// CartPole-v1's spaces as docs/protocol.md encodes them: Box(low, high, (4,), float32)
// with bounds of the full shape (inf where gymnasium has inf), and Discrete(2).
v1::Space CartPoleObservationSpace();
v1::Space CartPoleActionSpace();

// "UNAVAILABLE", "INVALID_ARGUMENT", ...: the code's name as gRPC spells it.
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace seed_rl
