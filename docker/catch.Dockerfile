# A derived image that carries a custom environment (examples/catch.py): build it on top of
# both seed-rl images, from the repository root, and run with SEED_RL_ENV_IMPORT=catch.
#
#   docker build -f docker/catch.Dockerfile --build-arg BASE=seed-rl-actor -t seed-rl-actor:catch .
#   docker build -f docker/catch.Dockerfile --build-arg BASE=seed-rl-learner -t seed-rl-learner:catch .
ARG BASE
FROM ${BASE}
COPY examples/catch.py /opt/envs/catch.py
ENV PYTHONPATH=/opt/envs
