"""How the built-in environments look, one function per scene, and the registry of renderers.

Each ``draw_*(axes, state, params)`` reads the state's fields by name (the environments'
NamedTuples, as numpy) and draws on fresh axes; nothing here imports an environment.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Circle, Polygon, Rectangle

CART, POLE, BALL, PLATFORM = "#4c72b0", "#c44e52", "#dd8452", "#8c8c8c"


@dataclasses.dataclass(frozen=True)
class Renderer:
    """``draw(axes, state, params)`` on one fresh axes per panel; ``panels`` are their titles."""

    draw: Callable[[Sequence[Any], Any, Any], None]
    panels: tuple[str, ...] = ("",)
    panel_size: tuple[float, float] = (3.2, 3.2)  # inches; frames are 100 dpi


def draw_cartpole(axes, state, params) -> None:
    """The cart on its track (|x| <= x_threshold) and the pole, ``2 * length`` long."""
    ax = axes[0]
    limit = float(getattr(params, "x_threshold", 2.4))
    pole = 2.0 * float(getattr(params, "length", 0.5))
    x, theta = float(state.x), float(state.theta)
    ax.plot([-limit - 0.5, limit + 0.5], [0, 0], color="black", lw=1)
    ax.add_patch(Rectangle((x - 0.25, 0), 0.5, 0.25, color=CART))
    top = np.array([x, 0.25])
    tip = top + pole * np.array([np.sin(theta), np.cos(theta)])
    ax.plot([top[0], tip[0]], [top[1], tip[1]], color=POLE, lw=4, solid_capstyle="round")
    ax.set_xlim(-limit - 0.5, limit + 0.5)
    ax.set_ylim(-0.5, pole + 0.75)


def draw_pendulum(axes, state, params) -> None:
    """The rod from the pivot, ``theta`` = 0 upright, and a dot at its tip."""
    ax = axes[0]
    length = float(getattr(params, "l", 1.0))
    theta = float(state.theta)
    tip = length * np.array([np.sin(theta), np.cos(theta)])
    ax.plot([0, tip[0]], [0, tip[1]], color=POLE, lw=5, solid_capstyle="round")
    ax.add_patch(Circle((0, 0), 0.05, color="black"))
    ax.set_xlim(-1.3 * length, 1.3 * length)
    ax.set_ylim(-1.3 * length, 1.3 * length)


def _rotation(q) -> np.ndarray:
    """world = R @ local for a unit (x, y, z, w) quaternion."""
    x, y, z, w = (float(v) for v in q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


HALF = 2.5  # the 3DBall platform cube's half size (jppo.envs.ball3d_physics.HALF_EXTENT)


def draw_ball3d(axes, state, params) -> None:
    """3DBall from the side (x right, y up: the platform's cross-section at z = 0) and from
    above (x right, z up: the platform's top face), the ball in both."""
    physics = getattr(state, "physics", state)  # 3DBallHard wraps the physics state
    rot = _rotation(np.asarray(physics.rot))
    pos = np.asarray(physics.pos, float)
    radius = 0.5 * float(getattr(params, "scale", 1.0))
    side, top = axes
    square = np.array([[-HALF, -HALF, 0], [HALF, -HALF, 0], [HALF, HALF, 0], [-HALF, HALF, 0]])
    side.add_patch(Polygon((square @ rot.T)[:, :2], color=PLATFORM))
    side.add_patch(Circle((pos[0], pos[1]), radius, color=BALL))
    side.set_xlim(-5, 5)
    side.set_ylim(-4, 6)
    face = np.array([[-HALF, HALF, -HALF], [HALF, HALF, -HALF], [HALF, HALF, HALF], [-HALF, HALF, HALF]])
    top.add_patch(Polygon((face @ rot.T)[:, [0, 2]], color=PLATFORM))
    top.add_patch(Circle((pos[0], pos[2]), radius, color=BALL))
    top.set_xlim(-5, 5)
    top.set_ylim(-5, 5)


def draw_grid(ax, cells: np.ndarray, colors: dict, background: str = "white") -> None:
    """A grid scene's cells (an int array ``[rows, cols]``, row 0 at the top) painted with
    ``colors`` (cell value -> matplotlib color), for renderers of grid worlds."""
    cells = np.asarray(cells)
    values = sorted(set(np.unique(cells).tolist()) | set(colors))
    index = np.searchsorted(values, cells)
    ax.imshow(index, cmap=ListedColormap([colors.get(v, background) for v in values]),
              vmin=0, vmax=len(values) - 1, interpolation="nearest")


# ML-Agents' colours: the agent blue, the green plus (and Basic's goals) green, the red ex red.
AGENT, GOOD, BAD, WALL = "#4c72b0", "#55a868", "#c44e52", "#8c8c8c"
# Basic's cells (jppo.envs.basic: START, SMALL_GOAL, LARGE_GOAL, MAX_POSITION), read here so
# that this module imports no environment.
BASIC_SMALL, BASIC_LARGE, BASIC_CELLS = 7, 17, 21


def draw_basic(axes, state, params) -> None:
    """Basic's line of cells: the small goal (7, light), the large goal (17) and the agent."""
    cells = np.zeros((1, BASIC_CELLS), int)
    cells[0, BASIC_SMALL], cells[0, BASIC_LARGE] = 1, 2
    cells[0, int(state.position)] = 3
    draw_grid(axes[0], cells, {0: "white", 1: "#b6dcbf", 2: GOOD, 3: AGENT})


def draw_gridworld(axes, state, params) -> None:
    """GridWorld from above: walls around, the green plus, the red ex, the agent, and the
    episode's goal in the title. Row 0 is the top, as z grows upward."""
    size = int(getattr(params, "grid_size", 5))
    cells = np.full((size + 2, size + 2), 4)
    cells[1:-1, 1:-1] = 0
    top = lambda xz: (size - int(xz[1]), int(xz[0]) + 1)  # (row, col) of cell (x, z)
    goals = np.asarray(state.goals)
    cells[top(goals[0])], cells[top(goals[1])] = 1, 2
    cells[top(np.asarray(state.agent))] = 3
    draw_grid(axes[0], cells, {0: "white", 1: GOOD, 2: BAD, 3: AGENT, 4: WALL})
    axes[0].set_title(f"goal: {'green plus' if int(state.goal) == 0 else 'red ex'}", fontsize=8)


_RENDERERS: dict[str, Renderer] = {
    "CartPole-v1": Renderer(draw_cartpole, ("CartPole-v1",), (4.0, 2.4)),
    "Pendulum-v1": Renderer(draw_pendulum, ("Pendulum-v1",)),
    "3DBall": Renderer(draw_ball3d, ("3DBall from the side", "from above")),
    "3DBallHard": Renderer(draw_ball3d, ("3DBallHard from the side", "from above")),
    "Basic": Renderer(draw_basic, ("Basic",), (6.4, 1.2)),
    "GridWorld": Renderer(draw_gridworld, ("GridWorld",)),
    # The same board and rules; the camera image itself is the environment's render_camera.
    "VisualGridWorld": Renderer(draw_gridworld, ("VisualGridWorld",)),
}


def register(name: str, renderer: Renderer) -> None:
    """Draw environment ``name`` with ``renderer`` (replacing any earlier one)."""
    if not isinstance(renderer, Renderer):
        raise TypeError(f"a renderer for {name!r} must be a jppo.render.Renderer, not "
                        f"{renderer!r}.")
    _RENDERERS[name] = renderer


def renderer_for(name: str) -> Renderer | None:
    """The renderer registered for environment ``name``; None if there is none."""
    return _RENDERERS.get(name)


def renderer_names() -> list[str]:
    return list(_RENDERERS)


__all__ = ["Renderer", "draw_ball3d", "draw_basic", "draw_cartpole", "draw_grid", "draw_gridworld",
           "draw_pendulum", "register",
           "renderer_for", "renderer_names"]
