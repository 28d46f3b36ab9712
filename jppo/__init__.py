"""jppo: actor-critic PPO as pure JAX functions composed into one jitted update."""
__version__ = "0.1.0"
