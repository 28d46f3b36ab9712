"""The Unity player stand-in: a test double that plays Unity's side of ML-Agents' gRPC protocol
against the real ``mlagents_envs.UnityEnvironment``, so the host loop is tested without Unity.

``server`` speaks the protocol (``python -m jppo.standin --port P``), ``scenes`` holds what it
simulates (3DBall's physics, shared with the JAX port). A test double, not an environment: the
loops never import it.

May import: ``jppo.envs`` (the shared physics); nothing else of jppo.
"""
