"""The small CartPole run configuration the CLI and scale-out tests train (seconds, not
minutes): one place to change it."""
from __future__ import annotations


def tiny_cartpole(max_steps: int, **behavior) -> dict:
    """An ML-Agents-style config dict: 4 CartPole envs, buffer 128, batch 32, a 16-unit body;
    ``behavior`` adds or replaces keys of the behavior (keep_checkpoints, checkpoint_interval)."""
    return {
        "behaviors": {"CartPole": {
            "trainer_type": "ppo",
            "hyperparameters": {"batch_size": 32, "buffer_size": 128, "learning_rate": 1e-3,
                                "beta": 1e-3, "epsilon": 0.2, "lambd": 0.95, "num_epoch": 2},
            "network_settings": {"normalize": True, "hidden_units": 16, "num_layers": 1},
            "reward_signals": {"extrinsic": {"gamma": 0.99, "strength": 1.0}},
            "max_steps": max_steps, "time_horizon": 64, "summary_freq": 256,
            "checkpoint_interval": 512, **behavior}},
        "jppo": {"env": "CartPole-v1", "num_envs": 4},
    }
