"""A plain PyTorch PPO to read beside the JAX code, and parameter transfer between the two.

- ``jppo.reference.torch_ppo``: the seeds' actor-critic PPO (RL-Adventure-2 / ML-Agents) written
  step by step in PyTorch with the same semantics as ``jppo``'s JAX core.
- ``jppo.reference.transfer``: Flax params <-> the torch model's ``state_dict``.

Both need ``torch`` (the ``jppo[torch]`` extra). Nothing here is imported by ``import jppo``, and
this package imports torch only when one of those modules is imported.

May import: ``jppo.core``.
"""
