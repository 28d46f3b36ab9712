"""The Unity player stand-in: a test double that plays Unity's side of ML-Agents' gRPC protocol
against the real ``mlagents_envs.UnityEnvironment``, so the host loop is tested without Unity.

``server`` speaks the protocol (``python -m jppo.standin --port P [--scene NAME]``) and ``wire``
writes its decision messages; ``composite`` holds the parts of a scene with several behaviors
(``--scene 3DBall+Basic``); ``catalog`` names the scenes it plays: ``scenes`` (3DBall's
physics, shared with the JAX port), ``stacked`` (3DBallHard's stacking sensors) and
``env_scene`` (Basic, GridWorld, Reach: the JAX environments themselves, one agent per copy).
A test double, not an environment: the loops never import it.

May import: ``jppo.envs`` (the shared physics and rules); nothing else of jppo.
"""
