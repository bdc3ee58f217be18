"""Pure tensor functions of the learner: the IMPALA update, V-trace, the losses.

``seed_rl.functional.impala`` is the update's maths in one function (Espeholt et al. 2018,
section 4); ``seed_rl.functional.vtrace`` computes V-trace; ``seed_rl.functional.loss`` holds the
policy-gradient, baseline and entropy losses; ``seed_rl.functional.categorical`` the softmax
policy's log-probabilities and entropies; ``seed_rl.functional.popart`` PopArt's value
statistics and the rescaling that preserves the value head's outputs;
``seed_rl.functional.observation_norm`` the running statistics that normalise observations. All need torch (the
``learner`` extra); actors never import this package.
"""

from seed_rl.functional import categorical, impala, loss, observation_norm, popart, vtrace

__all__ = ["categorical", "impala", "loss", "observation_norm", "popart", "vtrace"]
