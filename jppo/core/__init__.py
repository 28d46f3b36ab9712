"""The pure core: PPO as functions of arrays, composed into one jitted update.

config (PPOConfig), gae, losses, distributions (ActionSpec and the masked heads), observations
(one array or one per sensor, per-sensor encoders), encoders (ML-Agents' image encoders), layers
(Dense, He-normal), networks (the actor-critic), normalizer,
optim (Optax chain and schedules), policy (act / evaluate / value / mode), update (the train state, the rollout
and ``make_update``), buffer_update (the update on a host loop's flat buffer). No IO, no mesh,
no loop: everything here is jittable and vmappable, and knows nothing of where data comes from.

May import: nothing of jppo (jax, flax, optax, distrax, chex, numpy only).
"""
