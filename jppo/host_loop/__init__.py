"""The host loop: Unity (through mlagents-envs) and Gymnasium, stepped from Python, with a
jitted act and a jitted update.

vec_env (workers whose agents come and go), unity_env with unity_worker (one process per Unity
instance) and restarts (when a crashed build is restarted), gym_env, connect (what to connect to, does the behavior fit), acting (the padded
jitted act call), trajectories (experience per agent id, cut into trajectories, queued for
updates), meeting (the processes of a multi-process run meet once per update), sharded_update
(the update over a mesh), faults (how a run stops), and driver (setup, loop, finish of a run,
with ``jppo.runs`` for its folder).

May import: ``jppo.core``, ``jppo.distributed``, ``jppo.errors``, ``jppo.interrupts``; only
``driver`` imports ``jppo.runs``. Never the JAX loop or a CLI.
"""
