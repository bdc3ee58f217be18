"""A simulator that owns its loop, trained by seed-rl: K point masses on a line, each pushed
left, not at all, or right every tick; +1 for coming to rest near the origin, -0.01 per tick
until then; an episode is cut after 200 ticks. The world is not a gymnasium env: it ticks
all bodies at once and calls the learner through actors.simulator.SimulatorSession.

    cd examples
    seed-rl learner --env-import ticking_simulator --env PointMass-v0 --auth-token "" \\
        --target-return 0.5 &                       # the learner knows the spaces from here
    python ticking_simulator.py --learner 127.0.0.1:50051 --bodies 16

The learner makes ``PointMass-v0`` (below) only to read its spaces; the same dynamics as a
gymnasium env also let ``seed-rl eval`` play the trained policy. Torch-free.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

DT = 0.1
MAX_TICKS = 200
OBSERVATION_SPACE = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)  # position, velocity
ACTION_SPACE = gym.spaces.Discrete(3)  # push left, coast, push right


def advance(position: np.ndarray, velocity: np.ndarray, pushes: np.ndarray) -> tuple:
    """One tick of the dynamics for bodies ``[K]``: new position, velocity, and whether each
    came to rest near the origin (the goal)."""
    velocity = np.clip(velocity + (pushes - 1) * DT, -1.0, 1.0)
    position = np.clip(position + velocity * DT, -2.0, 2.0)
    return position, velocity, (np.abs(position) < 0.1) & (np.abs(velocity) < 0.1)


class PointMassWorld:
    """K bodies ticked together; the simulator's own state and loop, no gymnasium API."""

    def __init__(self, bodies: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.position = self.rng.uniform(-1.0, 1.0, bodies)
        self.velocity = np.zeros(bodies)
        self.ticks = np.zeros(bodies, dtype=np.int64)

    def observations(self) -> np.ndarray:  # [K, 2] float32
        return np.stack([self.position, self.velocity], axis=1).astype(np.float32)

    def tick(self, pushes: np.ndarray) -> tuple:
        """Advance every body by one tick under ``pushes [K]`` in {0, 1, 2}; bodies whose
        episode ended start a new one. Returns the tick's observations ``[K, 2]``, rewards,
        terminated and truncated ``[K]``, and the last observation of each truncated body."""
        self.position, self.velocity, at_rest = advance(self.position, self.velocity, pushes)
        self.ticks += 1
        rewards = np.where(at_rest, 1.0, -0.01)
        truncated = ~at_rest & (self.ticks >= MAX_TICKS)
        last = self.observations()
        finals = {int(i): last[i] for i in np.flatnonzero(truncated)}
        ended = at_rest | truncated
        self.position[ended] = self.rng.uniform(-1.0, 1.0, int(ended.sum()))
        self.velocity[ended] = 0.0
        self.ticks[ended] = 0
        return self.observations(), rewards, at_rest, truncated, finals


class PointMass(gym.Env):
    """One body as a gymnasium env (same dynamics): the spaces the learner checks actors
    against, and what ``seed-rl eval`` plays."""

    observation_space, action_space = OBSERVATION_SPACE, ACTION_SPACE

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = np.array([self.np_random.uniform(-1.0, 1.0), 0.0])
        return self.state.astype(np.float32), {}

    def step(self, action):
        position, velocity, at_rest = advance(self.state[:1], self.state[1:],
                                              np.array([int(action)]))
        self.state = np.concatenate([position, velocity])
        return (self.state.astype(np.float32), 1.0 if at_rest[0] else -0.01,
                bool(at_rest[0]), False, {})


gym.register("PointMass-v0", entry_point=PointMass, max_episode_steps=MAX_TICKS)


def main() -> None:
    from actors.simulator import SimulatorSession, TrainingOver

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learner", default=None, help="HOST:PORT (default SEED_RL_LEARNER)")
    parser.add_argument("--bodies", type=int, default=16)
    parser.add_argument("--ticks", type=int, default=0, help="stop after this many (0: never)")
    args = parser.parse_args()

    world = PointMassWorld(args.bodies)
    session = SimulatorSession("PointMass-v0", OBSERVATION_SPACE, ACTION_SPACE, args.bodies,
                               learner=args.learner)
    ticks, episodes, returns = 0, 0, np.zeros(args.bodies)
    with session:
        pushes = session.reset(world.observations())
        try:
            while not args.ticks or ticks < args.ticks:
                observations, rewards, terminated, truncated, finals = world.tick(pushes)
                returns += rewards
                ended = terminated | truncated
                episodes += int(ended.sum())
                returns[ended] = 0.0
                pushes = session.step(observations, rewards, terminated, truncated, finals)
                ticks += 1
        except TrainingOver:
            print("the learner says training is over")
    print(f"{ticks} ticks x {args.bodies} bodies, {episodes} episodes")


if __name__ == "__main__":
    main()
