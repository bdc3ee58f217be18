"""``seed-rl conformance -- COMMAND...``: checks an actor client in any language against the
actor protocol (docs/protocol.md, "Checking a client").

The client runs against a *checking learner*: the real serving path (server, token
interceptor, servicer, message checks; :mod:`learner.conformance.checking_learner`) whose
actions come from a scripted policy on CartPole-v1 instead of a model. Every message is
judged against the rules of the specification (:mod:`learner.conformance.rules`: the rule
table, a replay of CartPole's dynamics, the policy; :mod:`learner.conformance.judge`: the
per-step verdicts), through a scenario with a learner restart and the end of training
(:mod:`learner.conformance.scenario`), which prints one verdict per rule.
"""
