"""An episode's states as an animation file, drawn by a ``Renderer`` with matplotlib and written
by matplotlib's animation writers: Pillow for ``.gif``, ffmpeg for ``.mp4`` (ffmpeg must be on
the PATH). Frames are ``panel_size * 100`` pixels per panel, side by side.
"""
from __future__ import annotations

import pathlib
from typing import Any, Callable, Sequence

from matplotlib import animation
from matplotlib.figure import Figure

from jppo.render.scenes import Renderer

DPI = 100
WRITERS = {".gif": animation.PillowWriter, ".mp4": animation.FFMpegWriter}


def _figure(renderer: Renderer):
    width, height = renderer.panel_size
    # A bare Figure, not pyplot: no backend is chosen and no window opened, for the caller either.
    fig = Figure(figsize=(width * len(renderer.panels), height), dpi=DPI)
    axes = fig.subplots(1, len(renderer.panels), squeeze=False)
    return fig, list(axes[0])


def _draw(fig, axes, renderer: Renderer, state, params, caption: str) -> None:
    for ax, title in zip(axes, renderer.panels):
        ax.clear()
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
    renderer.draw(axes, state, params)
    fig.suptitle(caption, fontsize=8, y=0.02, va="bottom")


def animate(states: Sequence[Any], params: Any, renderer: Renderer, path, *, fps: int = 25,
            captions: Sequence[str] | None = None) -> pathlib.Path:
    """Write one frame per state to ``path`` (``.gif`` or ``.mp4``); ``captions`` (one per
    state) are printed under the frames."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITERS:
        raise ValueError(f"cannot write an animation to {str(path)!r}; give a .gif or .mp4 path.")
    if suffix == ".mp4" and not animation.FFMpegWriter.isAvailable():
        raise ValueError("an .mp4 animation needs ffmpeg on the PATH; install it, or write a .gif.")
    if not states:
        raise ValueError("no states to animate.")
    fig, axes = _figure(renderer)
    caption: Callable[[int], str] = (lambda i: captions[i]) if captions else (lambda i: "")
    movie = animation.FuncAnimation(
        fig, lambda i: _draw(fig, axes, renderer, states[i], params, caption(i)),
        frames=len(states), interval=1000 / fps, blit=False, repeat=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    movie.save(str(path), writer=WRITERS[suffix](fps=fps), dpi=DPI)
    return path


def still(state: Any, params: Any, renderer: Renderer, path, caption: str = "") -> pathlib.Path:
    """One state as a PNG, e.g. a frame for a README."""
    fig, axes = _figure(renderer)
    _draw(fig, axes, renderer, state, params, caption)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


__all__ = ["DPI", "WRITERS", "animate", "still"]
