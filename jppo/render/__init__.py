"""Pictures of environments: a ``Renderer`` per environment name draws one state with
matplotlib, and ``animate`` writes an episode's states as a GIF (Pillow, through matplotlib's
writer) or an MP4 (ffmpeg, through matplotlib's writer).

    renderer_for("CartPole-v1")          the built-in scenes: 3DBall / 3DBallHard (from the side and
                                         from above), CartPole-v1, Pendulum-v1
    register("GridWorld", Renderer(draw_gridworld, panels=("",)))    add one for another scene
    animate(states, params, renderer, "episode.gif", fps=25)

A renderer's ``draw(axes, state, params)`` gets fresh matplotlib axes (one per panel) and one
environment state (numpy leaves, no batch axis); ``draw_grid`` helps grid scenes.

May import: nothing of jppo (numpy and matplotlib only).
"""
from __future__ import annotations

from jppo.render.animation import animate, still
from jppo.render.scenes import (Renderer, draw_ball3d, draw_cartpole, draw_grid, draw_pendulum,
                                register, renderer_for, renderer_names)

__all__ = ["Renderer", "animate", "draw_ball3d", "draw_cartpole", "draw_grid", "draw_pendulum",
           "register", "renderer_for", "renderer_names", "still"]
