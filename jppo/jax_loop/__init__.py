"""The JAX loop: a whole run inside ``jit`` on a JAX-native environment.

rollout (``lax.scan`` over steps, ``vmap`` over environments), trainer (rollout then update as
one program, chunked, vmapped over seeds and sweep members), sharding (the loop over a mesh of
devices), evaluate (whole episodes of a trained policy), setup (the environment by name), and
driver (setup, loop, finish of a run, with ``jppo.runs`` for its folder).

May import: ``jppo.core``, ``jppo.envs``, ``jppo.distributed``, ``jppo.errors``,
``jppo.interrupts``; only
``driver`` imports ``jppo.runs``. Never the host loop or a CLI.
"""
