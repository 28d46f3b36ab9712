"""The Python face of the CLIs, for a researcher's own code: ``fit`` (a run on any JAX
environment object, with ``python -m jppo.train``'s folder, summaries, checkpoints, resume and
ONNX) and ``evaluation`` (a trained run's policy played for whole episodes, with an animation).

May import: ``jppo.core``, ``jppo.envs``, ``jppo.jax_loop``, ``jppo.runs``, ``jppo.render``,
``jppo.distributed``, ``jppo.errors``, ``jppo.files``; never a CLI, never the host loop.
"""
