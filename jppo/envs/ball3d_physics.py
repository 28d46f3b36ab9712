"""Unity ML-Agents 3DBall, one agent, at the granularity of one physics step (FixedUpdate, 0.02 s).

This module is the contract the Unity protocol stand-in builds on: ``reset_state``, ``observe``,
``physics_step`` and ``integrate``. ``jppo.envs.ball3d`` groups physics steps into decisions.

Frames: the agent's cube (5 x 5 x 5) rotates about its centre, the agent origin. Positions are the
ball's centre relative to that origin in world axes (y up); quaternions are stored in Unity's
component order ``(x, y, z, w)`` and compose as Unity's ``Quaternion *`` does (Hamilton product).
Unity's frame is left-handed, but it uses the same quaternion and matrix formulas, so the numbers
are identical; only pictures of the rotation differ.

Physics is a model of what PhysX does here, not PhysX: semi-implicit Euler; the ball rolls on the
top face (friction stops the contact point slipping, within the Coulomb cap) while its centre is
over the face (|x|, |z| <= 2.5 in platform coordinates), falls freely otherwise, and never bounces
(restitution 0). Contact is speculative: a step that would carry the ball through the face stops it
on the face, so landing neither tunnels nor hovers. Not modelled: rolling over the edge (the ball
drops as soon as its centre passes it), the cube's side faces, PhysX's depenetration velocity.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

HALF_EXTENT = 2.5  # the cube's half size: the top face is 2.5 above the origin, 2.5 to each side
_F32 = jnp.float32


class Ball3DParams(NamedTuple):
    """Unity's environment parameters (mass, scale, gravity) and the scene's fixed facts.

    Every field may be traced (``decision_period`` bounds a ``fori_loop``). ``mass`` is carried for
    Unity's API; the rolling dynamics do not depend on it (every impulse here is per unit mass).
    """

    mass: float = 1.0
    scale: float = 1.0  # ball radius is 0.5 * scale
    gravity: float = 9.81
    dt: float = 0.02
    decision_period: int = 5  # physics steps per decision, the action repeated
    max_physics_steps: int = 5000  # Unity's Agent.MaxStep
    max_tilt_reset_deg: float = 10.0  # reset tilt ~ U(-10, 10) degrees about x, then about z
    ball_reset_xz: float = 1.5  # ball reset at (U(-1.5, 1.5), height, U(-1.5, 1.5))
    ball_reset_height: float = 4.0
    max_rotation_deg: float = 2.0  # per physics step at |action| = 1
    tilt_gate: float = 0.25  # rotation is refused past |q.z| or |q.x| = 0.25 (about 29 degrees)
    friction: float = 0.6  # PhysX default material: only caps the impulse that makes the ball roll
    angular_drag: float = 0.01


class Ball3DState(NamedTuple):
    """One agent. ``rot`` float32 [4] (x, y, z, w) platform world rotation; ``pos``, ``vel``,
    ``ang_vel`` float32 [3] ball centre relative to the agent origin, its world velocity and
    angular velocity (rad/s); ``step_count`` int32 [] physics steps since reset (Unity's StepCount).
    """

    rot: jax.Array
    pos: jax.Array
    vel: jax.Array
    ang_vel: jax.Array
    step_count: jax.Array


def quat_mul(a: jax.Array, b: jax.Array) -> jax.Array:
    """Hamilton product of (x, y, z, w) quaternions [4], as Unity's ``a * b``."""
    ax, ay, az, aw = a[0], a[1], a[2], a[3]
    bx, by, bz, bw = b[0], b[1], b[2], b[3]
    return jnp.stack([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by + ay * bw + az * bx - ax * bz,
        aw * bz + az * bw + ax * by - ay * bx,
        aw * bw - ax * bx - ay * by - az * bz,
    ])


def axis_angle(degrees: jax.Array, axis: tuple[float, float, float]) -> jax.Array:
    """Unity's ``Quaternion.AngleAxis(degrees, axis)`` for a unit ``axis``: float32 [4] (x, y, z, w)."""
    half = jnp.deg2rad(jnp.asarray(degrees, _F32)) / 2
    s = jnp.sin(half)
    return jnp.stack([s * axis[0], s * axis[1], s * axis[2], jnp.cos(half)]).astype(_F32)


def rotation_matrix(q: jax.Array) -> jax.Array:
    """float32 [3, 3] R with world = R @ local for a unit (x, y, z, w) quaternion."""
    x, y, z, w = q[0], q[1], q[2], q[3]
    return jnp.stack([
        jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)]),
        jnp.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)]),
        jnp.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]),
    ])


def reset_state(key: jax.Array, params: Ball3DParams) -> Ball3DState:
    """Unity's ``OnEpisodeBegin``: identity, Rotate(x, U(-10, 10)), Rotate(z, U(-10, 10)); ball at
    (U(-1.5, 1.5), 4, U(-1.5, 1.5)) at rest. Unity leaves the angular velocity of the previous
    episode; a fresh state cannot know it, so it starts at zero.
    """
    # One draw of four values (one split-free threefry call keeps compile time down).
    u = jax.random.uniform(key, (4,), _F32, -1.0, 1.0)
    tilt = jnp.asarray(params.max_tilt_reset_deg, _F32)
    rot = quat_mul(axis_angle(tilt * u[0], (1.0, 0.0, 0.0)), axis_angle(tilt * u[1], (0.0, 0.0, 1.0)))
    spread = jnp.asarray(params.ball_reset_xz, _F32)
    pos = jnp.stack([spread * u[2], jnp.asarray(params.ball_reset_height, _F32), spread * u[3]])
    zero3 = jnp.zeros(3, _F32)
    return Ball3DState(rot, pos, zero3, zero3, jnp.zeros((), jnp.int32))


def observe(state: Ball3DState) -> jax.Array:
    """float32 [8]: [q.z, q.x, ball - agent (3), ball velocity (3)], Ball3DAgent's order."""
    return jnp.concatenate([state.rot[2:3], state.rot[0:1], state.pos, state.vel]).astype(_F32)


def rotate_platform(rot: jax.Array, action: jax.Array, params: Ball3DParams) -> jax.Array:
    """Ball3DAgent's rotation: z first, then x, each gated on the current quaternion component.

    The gate reads the component before rotating, so the tilt can pass it by one step's rotation.
    """
    a = jnp.clip(jnp.asarray(action, _F32), -1.0, 1.0) * jnp.asarray(params.max_rotation_deg, _F32)
    gate = jnp.asarray(params.tilt_gate, _F32)

    def turn(q, angle, index, axis):
        allowed = ((q[index] < gate) & (angle > 0)) | ((q[index] > -gate) & (angle < 0))
        turned = quat_mul(q, axis_angle(angle, axis))
        # Renormalise: Unity's transform keeps unit quaternions, float32 products drift.
        turned = turned * jax.lax.rsqrt(jnp.sum(turned * turned))
        return jnp.where(allowed, turned, q)

    rot = turn(rot, a[0], 2, (0.0, 0.0, 1.0))
    return turn(rot, a[1], 0, (1.0, 0.0, 0.0))


def fell_off(pos: jax.Array) -> jax.Array:
    """Ball3DAgent's end test on the ball position relative to the agent: bool []."""
    return (pos[1] < -2.0) | (jnp.abs(pos[0]) > 3.0) | (jnp.abs(pos[2]) > 3.0)


def integrate(state: Ball3DState, params: Ball3DParams) -> Ball3DState:
    """One physics step of the ball against a platform held still; ``step_count`` unchanged.

    Public so that a Unity stand-in can run the physics of a frame in which Unity reset the
    agent (OnEpisodeBegin happens before that frame's physics).
    """
    f = lambda v: jnp.asarray(v, _F32)
    dt, g, r = f(params.dt), f(params.gravity), 0.5 * f(params.scale)
    top = f(HALF_EXTENT)
    rmat = rotation_matrix(state.rot)
    # Row vectors times R are R^T applied: world -> platform coordinates (y along the face normal).
    pos, vel, ang = state.pos @ rmat, state.vel @ rmat, state.ang_vel @ rmat

    px, py, pz = pos[0], pos[1], pos[2]
    vx, vy, vz = vel[0], vel[1], vel[2]
    over_face = (jnp.abs(px) <= top) & (jnp.abs(pz) <= top) & (py >= top)
    gap = py - (top + r)
    # The platform was rotated (teleported) into the ball: put the ball back on the face and drop
    # its approaching normal velocity, as a restitution-0 contact would.
    pushed = over_face & (gap < 0)
    py = jnp.where(pushed, top + r, py)
    gap = jnp.where(pushed, 0.0, gap)
    vy = jnp.where(pushed, jnp.maximum(vy, 0.0), vy)

    # World gravity (0, -g, 0) in platform axes is -g times R's middle row.
    vx, vy, vz = vx - g * dt * rmat[1, 0], vy - g * dt * rmat[1, 1], vz - g * dt * rmat[1, 2]
    # Speculative contact: reaching the face this step stops the ball on it.
    vy_limit = -gap / dt
    contact = over_face & (vy < vy_limit)
    normal_impulse = jnp.where(contact, vy_limit - vy, 0.0)  # per unit mass
    vy = jnp.where(contact, vy_limit, vy)

    # Friction makes the contact point (centre - r y) stop slipping; its slip is v + w x (0, -r, 0).
    # For a solid sphere (I = 2/5 m r^2) that takes 2/7 of the slip as impulse, which is what turns
    # g sin(theta) into (5/7) g sin(theta) on a slope; Coulomb caps it at friction x normal impulse.
    jx, jz = -(2.0 / 7.0) * (vx + r * ang[2]), -(2.0 / 7.0) * (vz - r * ang[0])
    size = jnp.sqrt(jx * jx + jz * jz)
    cap = f(params.friction) * normal_impulse
    shrink = jnp.where(contact, jnp.where(size > cap, cap / jnp.maximum(size, 1e-30), 1.0), 0.0)
    jx, jz = jx * shrink, jz * shrink
    spin = 2.5 / r  # angular impulse r J over I / m = 2/5 r^2
    damp = jnp.maximum(0.0, 1.0 - dt * f(params.angular_drag))  # PhysX angular damping
    ang = jnp.stack([ang[0] - spin * jz, ang[1], ang[2] + spin * jx]) * damp
    vel = jnp.stack([vx + jx, vy, vz + jz])

    pos = jnp.stack([px, py, pz]) + vel * dt
    return state._replace(pos=pos @ rmat.T, vel=vel @ rmat.T, ang_vel=ang @ rmat.T)


def physics_step(state: Ball3DState, action: jax.Array, params: Ball3DParams):
    """One FixedUpdate in Unity's order: rotate (with the gate), test the ball position from before
    this step's physics, then integrate. Returns ``(state, reward, fell)``; reward float32 [] is
    -1 on a fall, else 0.1; ``fell`` bool [].

    The step that ends the episode (a fall, or ``step_count`` reaching ``max_physics_steps``)
    skips the integration: Unity observes the terminal state and resets the agent before that
    frame's physics, so the returned state is what Unity reports as the terminal observation.
    """
    rot = rotate_platform(state.rot, action, params)
    fell = fell_off(state.pos)
    reward = jnp.where(fell, -1.0, 0.1).astype(_F32)
    count = state.step_count + 1
    rotated = state._replace(rot=rot, step_count=count)
    ends = fell | (count >= params.max_physics_steps)
    moved = integrate(rotated, params)
    new = jax.tree_util.tree_map(lambda a, b: jnp.where(ends, a, b), rotated, moved)
    return new, reward, fell
