"""Unity ML-Agents' GridWorld as its agent sees it: the camera image, rendered in JAX, and the
goal signal. The rules are ``jppo.envs.gridworld``'s (this class only replaces the observation).

What ML-Agents' agent observes (release 19, ``Project/Assets/ML-Agents/Examples/GridWorld``:
``Prefabs/Area.prefab``, ``Scripts/GridArea.cs``; ``com.unity.ml-agents/Runtime/Sensors/
CameraSensor.cs``), sensors in Unity's order (sorted by name):

- ``CameraSensor``: a ``CameraSensorComponent`` on the Agent, ``m_Width: 84``, ``m_Height: 64``,
  ``m_Grayscale: 0``, ``m_Compression: 1`` (PNG): an image of shape (64, 84, 3), HWC, dimension
  properties (translational equivariance, translational equivariance, none). The camera
  (``agentCam``) is orthographic, looks straight down, and ``GridArea.SetEnvironment`` centres
  it on the grid, ``orthographicSize = gridSize / 2``: the image's height spans the grid's
  ``gridSize`` cells exactly (12.8 pixels per cell at 64 rows), its width ``84 / 64`` times
  that, so a strip of the walls shows left and right (x grows to the right, z upward);
- ``VectorSensor``: a ``VectorSensorComponent`` of size 2, observation type GoalSignal: the
  episode's goal, one-hot (green plus, red ex).

What the camera shows, from the prefabs: the floor; the walls (``sW``, ``sE``: one cell wide,
beside the grid); the goals, ``goal-plus`` two green bars 1 x 0.2 crossing at the cell's
centre, ``goal-ex`` the same bars turned 45 degrees, in red; the agent, whose own cube has no
renderer: a square ring (four 0.2-wide bars along the cell's edges, the ``Top`` child). Its
``Bottom-Green``/``Bottom-Red`` rings, which show the goal, lie under ``Top`` with the same
outline, so the camera above cannot see them: the goal reaches the policy through the goal
signal only, as in Unity.

Colours are flat (no lighting) and, where the materials could not be read, chosen to be told
apart (``COLOURS``); every colour is a multiple of 1/255, so an 8-bit PNG carries the image
exactly. Pixels are sampled at their centres (no anti-aliasing, as Unity's camera without MSAA:
``m_AllowMSAA: 0``).

Rendering is one fused XLA loop over the pixels: constant maps say, per pixel, which cell it
lies in and which of the three shapes (plus, ex, ring) cover it at its place in the cell; per
step, a pixel takes the colour of the last shape whose cell is the agent's or a goal's, else
the constant background (floor or wall). No gather: selects only, which XLA fuses (a palette
gather of per-pixel labels measured no faster on CPU). ``grayscale`` averages the channels as
Unity's ``ObservationWriter`` does (``(r + g + b) / 3``): shape (H, W, 1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jppo.envs.base import Box
from jppo.envs.gridworld import EX, PLUS, GridWorld, GridWorldState

WIDTH, HEIGHT = 84, 64  # Area.prefab's CameraSensorComponent
FLOOR, WALL, GREEN, RED, AGENT = range(5)  # pixel labels, in drawing order (later on top)
COLOURS = np.array([[214, 214, 214],   # floor
                    [102, 102, 102],   # walls
                    [40, 170, 60],     # green plus
                    [210, 40, 40],     # red ex
                    [40, 90, 210]],    # the agent's ring
                   np.float32) / 255.0
BAR = 0.1  # half the width of the goals' bars and of the agent's ring (0.2 in the prefabs)


def pixel_layout(grid_size: int, width: int = WIDTH, height: int = HEIGHT):
    """Per pixel: the grid cell it lies in (``x * grid_size + z``; -1 for wall, which is also
    what lies beyond the grid), and bool masks of the plus, the ex and the agent's ring at the
    pixel's offset from its cell's centre. Pixel centres, row 0 at the top (largest z)."""
    scale = height / grid_size  # pixels per cell: the orthographic size spans the grid's height
    centre = (grid_size - 1) / 2.0
    cols = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    x = centre + (cols - width / 2.0) / scale
    z = centre - (rows - height / 2.0) / scale
    x, z = np.meshgrid(x, z)  # [H, W]
    cx, cz = np.floor(x + 0.5), np.floor(z + 0.5)
    inside = (cx >= 0) & (cx < grid_size) & (cz >= 0) & (cz < grid_size)
    cell = np.where(inside, cx * grid_size + cz, -1).astype(np.int32)
    dx, dz = x - cx, z - cz
    plus = ((np.abs(dx) <= 0.5) & (np.abs(dz) <= BAR)) | ((np.abs(dz) <= 0.5) & (np.abs(dx) <= BAR))
    u, v = (dx + dz) / np.sqrt(2.0), (dx - dz) / np.sqrt(2.0)
    ex = ((np.abs(u) <= 0.5) & (np.abs(v) <= BAR)) | ((np.abs(v) <= 0.5) & (np.abs(u) <= BAR))
    ring = np.maximum(np.abs(dx), np.abs(dz)) >= 0.5 - 2 * BAR
    return cell, plus & inside, ex & inside, ring & inside


class VisualGridWorld(GridWorld):
    """GridWorld seen through its camera: observations (image float32 [H, W, 3] in [0, 1],
    goal one-hot [2]), the rules, actions and masks of ``GridWorld`` (module docstring).
    ``width``, ``height`` (the camera's resolution, 84 x 64 as ML-Agents') and ``grayscale``
    fix the image; other keywords are ``GridWorldParams``' fields."""

    name = "VisualGridWorld"

    def __init__(self, width: int = WIDTH, height: int = HEIGHT, grayscale: bool = False,
                 **params):
        super().__init__(**params)
        if int(width) < 1 or int(height) < 1:
            raise ValueError(f"the camera's resolution must be positive, not {width} x {height}.")
        self.width, self.height, self.grayscale = int(width), int(height), bool(grayscale)
        cell, plus, ex, ring = pixel_layout(self.default_params.grid_size, self.width, self.height)
        self._cell = cell
        self._shapes = np.stack([plus, ex, ring])  # [3, H, W]: what covers a pixel of a cell
        palette = COLOURS.mean(axis=1, keepdims=True) if self.grayscale else COLOURS
        self._palette = palette.astype(np.float32)
        self._background = self._palette[np.where(cell < 0, WALL, FLOOR)]  # [H, W, C]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.height, self.width, 1 if self.grayscale else 3

    def render_camera(self, state: GridWorldState) -> jax.Array:
        """The camera's image of ``state``: float32 [H, W, C] in [0, 1]."""
        g = self.default_params.grid_size
        cells = jnp.stack([state.goals[PLUS, 0] * g + state.goals[PLUS, 1],
                           state.goals[EX, 0] * g + state.goals[EX, 1],
                           state.agent[0] * g + state.agent[1]])  # [3]: plus, ex, agent
        cell, shapes = jnp.asarray(self._cell), jnp.asarray(self._shapes)
        image = jnp.asarray(self._background)
        for kind, colour in ((PLUS, GREEN), (EX, RED), (2, AGENT)):  # later on top
            covered = (cell == cells[kind]) & shapes[kind]
            image = jnp.where(covered[..., None], jnp.asarray(self._palette[colour]), image)
        return image

    def _obs(self, state: GridWorldState):
        return self.render_camera(state), jax.nn.one_hot(state.goal, 2, dtype=jnp.float32)

    def observation_space(self, params=None) -> tuple[Box, Box]:
        return Box(0.0, 1.0, self.image_shape), Box(0.0, 1.0, (2,))


__all__ = ["COLOURS", "HEIGHT", "VisualGridWorld", "WIDTH", "pixel_layout"]
