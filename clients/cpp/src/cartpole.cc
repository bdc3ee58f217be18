#include "cartpole.h"

#include <cmath>
#include <numbers>

namespace seed_rl {
namespace {

// gymnasium/envs/classic_control/cartpole.py, CartPoleEnv.__init__
constexpr double kGravity = 9.8;
constexpr double kMassCart = 1.0;
constexpr double kMassPole = 0.1;
constexpr double kTotalMass = kMassPole + kMassCart;
constexpr double kLength = 0.5;  // half the pole's length
constexpr double kPoleMassLength = kMassPole * kLength;
constexpr double kForceMag = 10.0;
constexpr double kTau = 0.02;
constexpr double kThetaThreshold = 12 * 2 * std::numbers::pi / 360;
constexpr double kXThreshold = 2.4;

}  // namespace

std::array<float, CartPole::kObservationSize> CartPole::ObservationHigh() {
  const float inf = INFINITY;
  return {static_cast<float>(kXThreshold * 2), inf, static_cast<float>(kThetaThreshold * 2),
          inf};
}

CartPole::CartPole(uint64_t seed) : rng_(seed) {}

CartPole::Observation CartPole::ToObservation(const State& state) {
  return {static_cast<float>(state[0]), static_cast<float>(state[1]),
          static_cast<float>(state[2]), static_cast<float>(state[3])};
}

CartPole::Observation CartPole::Reset() {
  std::uniform_real_distribution<double> uniform(-0.05, 0.05);
  for (double& value : state_) value = uniform(rng_);
  elapsed_steps_ = 0;
  return ToObservation(state_);
}

CartPole::Step CartPole::Apply(int action) {
  auto [x, x_dot, theta, theta_dot] = state_;
  const double force = action == 1 ? kForceMag : -kForceMag;
  const double costheta = std::cos(theta);
  const double sintheta = std::sin(theta);
  // The same expressions as gymnasium's step(), evaluated left to right as Python does.
  const double temp = (force + kPoleMassLength * (theta_dot * theta_dot) * sintheta) / kTotalMass;
  const double thetaacc = (kGravity * sintheta - costheta * temp) /
                          (kLength * (4.0 / 3.0 - kMassPole * (costheta * costheta) / kTotalMass));
  const double xacc = temp - kPoleMassLength * thetaacc * costheta / kTotalMass;
  // Euler integration (kinematics_integrator "euler", the default)
  x = x + kTau * x_dot;
  x_dot = x_dot + kTau * xacc;
  theta = theta + kTau * theta_dot;
  theta_dot = theta_dot + kTau * thetaacc;
  state_ = {x, x_dot, theta, theta_dot};
  ++elapsed_steps_;

  Step step;
  step.observation = ToObservation(state_);
  step.terminated = x < -kXThreshold || x > kXThreshold || theta < -kThetaThreshold ||
                    theta > kThetaThreshold;
  step.reward = 1.0;  // also on the step that terminates (gymnasium's default reward)
  step.truncated = elapsed_steps_ >= kMaxEpisodeSteps;  // TimeLimit(max_episode_steps=500)
  return step;
}

}  // namespace seed_rl
