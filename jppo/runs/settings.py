"""Run settings from an ML-Agents trainer YAML (accepted as is) plus a ``jppo:`` section.

    behaviors:
      3DBall:
        trainer_type: ppo
        hyperparameters: {batch_size: 64, buffer_size: 12000, ...}
        network_settings: {normalize: true, hidden_units: 128, num_layers: 2}
        reward_signals: {extrinsic: {gamma: 0.99, strength: 1.0}}
        max_steps: 500000
        time_horizon: 1000
        summary_freq: 12000
    jppo:                  # jppo's own keys
      env: 3DBall
      num_envs: 12

Every mistake raises ``UserError`` with one sentence naming the key, the value and what is
allowed; nothing here touches the file system beyond reading the YAML.

The file is read by ``jppo.runs.config_file`` (YAML 1.1 as ML-Agents reads it; duplicate
keys and alias bombs refused). An integer field given a number that is not whole
(``2048.5``) is refused where ML-Agents would truncate it.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
import warnings
from typing import Any, Optional

import yaml

from jppo.core.config import ConfigError, ConfigWarning, PPOConfig, field_names
from jppo.errors import UserError, brief
from jppo.runs import document, environment_parameters, shipped
from jppo.runs.config_file import number_text, read_yaml

# The main job's config: configs/3DBall.yaml, from the checkout or the installed package.
DEFAULT_CONFIG = shipped.default()


# Seeds and worker counts reach int32 arrays and Unity's protocol (an int32 seed).
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
# Unity's EngineConfigurationChannel clamps the time scale to [1, 100]; a value outside is
# refused rather than silently changed.
TIME_SCALE_RANGE = (1.0, 100.0)
MAX_TIMEOUT_WAIT = 86_400.0  # a day: longer means "forever" and overflows some waits
# A name that becomes a file or folder: at most this many bytes (UTF-8), leaving room under
# the usual 255-byte limit for suffixes such as "-seed12.onnx" and the atomic writer's ".tmp".
MAX_NAME_BYTES = 128


# What ML-Agents sets per behavior (a TrainerSettings), besides the PPO hyperparameters; every
# other field of RunSettings belongs to the run.
PER_BEHAVIOR = ("behavior", "ppo", "summary_freq", "keep_checkpoints", "checkpoint_interval",
                "init_path")


@dataclasses.dataclass(frozen=True)
class BehaviorSettings:
    """Another behavior of a run that trains several together (``RunSettings.others``): its
    name and its own trainer settings, as ML-Agents keeps one TrainerSettings per behavior."""

    behavior: str
    ppo: PPOConfig
    summary_freq: int = 50_000
    keep_checkpoints: int = 5
    checkpoint_interval: int = 500_000
    init_path: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything a training run needs besides the command line's file-system choices.

    ``behavior`` and the fields of ``PER_BEHAVIOR`` are the first behavior's; a run of several
    behaviors (a Unity scene with several agent types) holds the others in ``others``, and
    ``for_behavior`` gives each one's view: these settings with its own trainer fields."""

    behavior: str
    ppo: PPOConfig
    env: Optional[str] = None
    # JAX environments trained side by side (jppo.num_envs, else env_settings.num_envs), or
    # the Gymnasium vector's width.
    num_envs: Optional[int] = None
    # Unity instances (env_settings.num_envs alone: jppo.num_envs counts JAX copies).
    num_workers: Optional[int] = None
    num_seeds: int = 1
    seed: int = 0
    summary_freq: int = 50_000
    keep_checkpoints: int = 5
    checkpoint_interval: int = 500_000
    run_id: str = "ppo"
    results_dir: str = "results"
    environment_parameters: dict = dataclasses.field(default_factory=dict)
    base_port: Optional[int] = None
    time_scale: float = 20.0
    no_graphics: bool = False
    timeout_wait: float = 60.0
    # Restarts of a Unity build that failed, per worker (env_settings; -1: no limit), as
    # ML-Agents restarts them (jppo.host_loop.restarts).
    max_lifetime_restarts: int = 10
    restarts_rate_limit_n: int = 1
    restarts_rate_limit_period_s: int = 60
    export_onnx: bool = True
    # Where jppo's listening sockets accept connections (--bind): None is localhost for the
    # gRPC servers Unity connects to, the --coordinator host for jax.distributed's.
    bind: Optional[str] = None
    # Start from another run's policy (jppo.runs.initialize): a run id under results_dir
    # (checkpoint_settings.initialize_from, --initialize-from) and/or the behavior's init_path
    # (a run folder or a checkpoint file; a bare file name is looked up in initialize_from's run).
    initialize_from: Optional[str] = None
    init_path: Optional[str] = None
    # Run the trained policy without training (checkpoint_settings.inference, --inference).
    inference: bool = False
    others: tuple = ()  # BehaviorSettings of the behaviors after the first, in the file's order

    @property
    def behavior_names(self) -> tuple:
        return (self.behavior,) + tuple(b.behavior for b in self.others)

    def for_behavior(self, name: str) -> "RunSettings":
        """The run as one behavior sees it: that behavior's trainer settings, no others."""
        if name == self.behavior:
            return dataclasses.replace(self, others=())
        (own,) = [b for b in self.others if b.behavior == name]
        return dataclasses.replace(self, others=(), **{k: getattr(own, k) for k in PER_BEHAVIOR})

    def each_behavior(self) -> list["RunSettings"]:
        return [self.for_behavior(name) for name in self.behavior_names]

    def with_behaviors(self, views: list["RunSettings"]) -> "RunSettings":
        """These run settings holding the behaviors of ``views`` (``for_behavior``'s form)."""
        first, rest = views[0], views[1:]
        return dataclasses.replace(
            self, **{k: getattr(first, k) for k in PER_BEHAVIOR},
            others=tuple(BehaviorSettings(**{k: getattr(v, k) for k in PER_BEHAVIOR})
                         for v in rest))

    def to_yaml_dict(self, env: Optional[str] = None) -> dict:
        """The resolved settings, written to results/<run-id>/configuration.yaml: an ML-Agents
        trainer file plus the ``jppo:`` section, which ``parse`` reads back to these same
        settings (``env``: the environment the run resolved, when the settings name none)."""
        out = self._one_yaml_dict(env)
        for view in self.each_behavior()[1:]:
            out["behaviors"].update(view._one_yaml_dict(env)["behaviors"])
        return out

    def _one_yaml_dict(self, env: Optional[str]) -> dict:
        p = self.ppo
        own_ppo = {k: getattr(p, k) for k in ("loss", "network", "value_coef", "clip_value",
                                               "max_grad_norm", "kl_target", "kl_coef",
                                               "adam_eps", "advantage_eps", "obs_clip")}
        hyper = {k: getattr(p, k) for k in ("batch_size", "buffer_size", "learning_rate",
                                             "learning_rate_schedule", "beta", "epsilon",
                                             "lambd", "num_epoch", "beta_schedule",
                                             "epsilon_schedule")}
        behavior = {
            "trainer_type": "ppo", "hyperparameters": hyper,
            "network_settings": {"normalize": p.normalize, "hidden_units": p.hidden_units,
                                 "num_layers": p.num_layers},
            "reward_signals": {"extrinsic": {"gamma": p.gamma, "strength": p.strength}},
            "keep_checkpoints": self.keep_checkpoints,
            "checkpoint_interval": self.checkpoint_interval, "max_steps": p.max_steps,
            "time_horizon": p.time_horizon, "summary_freq": self.summary_freq,
            "init_path": self.init_path}
        return {
            "behaviors": {self.behavior: behavior},
            "env_settings": {"base_port": self.base_port, "num_envs": self.num_workers,
                             "seed": self.seed, "timeout_wait": self.timeout_wait,
                             "max_lifetime_restarts": self.max_lifetime_restarts,
                             "restarts_rate_limit_n": self.restarts_rate_limit_n,
                             "restarts_rate_limit_period_s": self.restarts_rate_limit_period_s},
            "engine_settings": {"time_scale": self.time_scale, "no_graphics": self.no_graphics},
            "environment_parameters": dict(self.environment_parameters) or None,
            "checkpoint_settings": {"run_id": self.run_id, "results_dir": self.results_dir,
                                    "initialize_from": self.initialize_from,
                                    "inference": self.inference},
            "jppo": {"env": self.env or env, "num_envs": self.num_envs,
                     "num_seeds": self.num_seeds, "export_onnx": self.export_onnx,
                     "bind": self.bind, **own_ppo},
        }


def _where(path: list[str]) -> str:
    return ".".join(path)


def _mapping(value, path: list[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{_where(path)} must be a mapping of keys to values, not {brief(value)}.")
    return value


_typed = document.typed


_PPO_TYPES = {f.name: ("int" if f.type in ("int",) else "float" if f.type in ("float",) else
                       "bool" if f.type == "bool" else "str" if f.type == "str" else None)
              for f in dataclasses.fields(PPOConfig)}


def _ppo_value(field: str, value):
    if value is None and field in ("max_grad_norm", "beta_schedule", "epsilon_schedule"):
        return None
    kind = _PPO_TYPES.get(field) or {"max_grad_norm": "float", "beta_schedule": "str",
                                     "epsilon_schedule": "str"}[field]
    return _typed(value, kind, field)


def parse(data: Any, source: str = "the configuration") -> RunSettings:
    """``RunSettings`` from the parsed YAML document ``data``, checked against the key table
    (``jppo.runs.document``); the keys accepted without effect are named in one warning."""
    checked = document.check(data, source)
    views = [_behavior_settings(c) for c in [checked] + checked.others]
    settings = validate_run(views[0].with_behaviors(views))
    if checked.warning():
        warnings.warn(checked.warning(), ConfigWarning, stacklevel=2)
    return settings


def _behavior_settings(checked: document.Checked) -> RunSettings:
    """The settings of one checked behavior (the run's fields as the whole file gives them)."""
    values = checked.values
    ppo = {k[4:]: v for k, v in values.items() if k.startswith("ppo.")}
    run = {k[4:]: v for k, v in values.items() if k.startswith("run.")}
    for key in ("summary_freq", "keep_checkpoints", "checkpoint_interval"):
        if key in run:
            run[key] = _positive_int(run[key], key)
    even = run.pop("even_checkpoints", False)
    if "environment_parameters" in run:
        run["environment_parameters"] = _environment_parameters(run["environment_parameters"])
    config = make_ppo_config(ppo)
    if even:
        run["checkpoint_interval"] = max(1, config.max_steps // run.get("keep_checkpoints", 5))
    return RunSettings(behavior=checked.behavior, ppo=config, **run)


def _positive_int(value, name: str) -> int:
    value = _typed(value, "int", name)
    if value < 1:
        raise UserError(f"{name} = {brief(value)} is not allowed; {name} must be an integer >= 1.")
    return value


def _environment_parameters(value) -> dict:
    """Constants, samplers and curricula, checked and made plain data
    (``jppo.runs.environment_parameters``)."""
    return environment_parameters.normalize(value)


def make_ppo_config(values: dict) -> PPOConfig:
    try:
        return PPOConfig(**values)
    except ConfigError as err:
        raise UserError(str(err)) from None


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def check_name(what: str, value) -> str:
    """``value`` if it can safely be one file or folder name under results/ (a run id, a
    behavior, a sweep member's folder), else a ``UserError`` of one sentence: 1 to
    ``MAX_NAME_BYTES`` bytes, no '/' or '\\', no control character, not starting with '.'
    (so never '.', '..', an absolute path or a hidden file)."""
    why = None
    if not isinstance(value, str) or not value:
        why = "it is empty"
    elif "/" in value or "\\" in value:
        why = "it contains a slash"
    elif any(ord(c) < 32 or ord(c) == 127 for c in value):
        why = "it contains a control character"
    elif value.startswith("."):
        why = "it starts with a dot"
    elif len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        why = f"it is longer than {MAX_NAME_BYTES} bytes"
    if why:
        raise UserError(f"{what} {brief(value)} is not allowed: {why}; a {what} names a file or "
                        f"folder under the results folder, so it must be 1 to {MAX_NAME_BYTES} "
                        "bytes without slashes or control characters, not starting with a dot.")
    return value


def validate_run(settings: RunSettings) -> RunSettings:
    """The run's own settings checked (the PPO config checks itself): names, counts, seeds,
    ports and Unity's numbers; one sentence per mistake."""
    check_name("run id", settings.run_id)
    for name in settings.behavior_names:
        check_name("behavior name", name)
    for name in ("num_envs", "num_workers"):
        value = getattr(settings, name)
        if value is not None and not 1 <= value <= INT32_MAX:
            raise UserError(f"num_envs = {brief(value)} is not allowed; num_envs must be an "
                            f"integer from 1 to {INT32_MAX}.")
    if not 1 <= settings.num_seeds <= INT32_MAX:
        raise UserError(f"num_seeds = {brief(settings.num_seeds)} is not allowed; num_seeds must "
                        "be an integer >= 1.")
    last_seed = settings.seed + settings.num_seeds - 1
    if not (INT32_MIN <= settings.seed and last_seed <= INT32_MAX):
        raise UserError(f"seed = {brief(settings.seed)} is not allowed; seeds (seed to seed + "
                        f"num_seeds - 1) must lie between {INT32_MIN} and {INT32_MAX}.")
    if settings.base_port is not None and not 1 <= settings.base_port <= 65535:
        raise UserError(f"base_port = {brief(settings.base_port)} is not allowed; a port is an "
                        "integer from 1 to 65535.")
    if not (_finite(settings.timeout_wait) and 0 < settings.timeout_wait <= MAX_TIMEOUT_WAIT):
        raise UserError(f"timeout_wait = {brief(settings.timeout_wait)} is not allowed; "
                        f"--timeout-wait is a number of seconds > 0 and <= {MAX_TIMEOUT_WAIT:g}.")
    for name in ("max_lifetime_restarts", "restarts_rate_limit_n", "restarts_rate_limit_period_s"):
        value = getattr(settings, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and -1 <= value <= INT32_MAX):
            raise UserError(f"{name} = {brief(value)} is not allowed; env_settings.{name} "
                            f"(--{name.replace('_', '-')}) must be an integer >= -1 (-1: no "
                            "limit).")
    low, high = TIME_SCALE_RANGE
    if not (_finite(settings.time_scale) and low <= settings.time_scale <= high):
        raise UserError(f"time_scale = {brief(settings.time_scale)} is not allowed; --time-scale "
                        f"is a number from {low:g} to {high:g} (Unity clamps it to that range).")
    if settings.env is not None and not settings.env.strip():
        raise UserError("env = '' is not allowed; give a JAX environment's name, a Unity build "
                        "path, 'editor', or gymnasium:<id>.")
    return settings


def load(path: str | pathlib.Path) -> RunSettings:
    """Read and parse a YAML file; a missing file or malformed YAML is a ``UserError``."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist; give the path of a trainer "
                        "YAML such as configs/3DBall.yaml.")
    source = f"config file {str(path)!r}"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{source} cannot be read: {err}.") from None
    return parse(read_yaml(text, source), source=source)


def yaml11_float(name: str, value):
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string (it wants ``1.0e-3``); for a float field
    such text is the number it looks like."""
    if _PPO_TYPES.get(name) == "float" or name == "max_grad_norm":
        return number_text(value)
    return value


def apply_overrides(settings: RunSettings, assignments: list[str]) -> RunSettings:
    """``name=value`` pairs (value parsed as YAML) applied to the PPO hyperparameters (of
    every behavior, where the run trains several)."""
    values = {}
    for item in assignments:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UserError(f"--set {item!r} is not of the form name=value, e.g. --set "
                            "learning_rate=1e-3.")
        if name not in field_names():
            raise UserError(f"--set {name}: unknown hyperparameter; allowed names are: "
                            f"{', '.join(field_names())}.")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        values[name] = _ppo_value(name, value)
    if not values:
        return settings
    return settings.with_behaviors([
        dataclasses.replace(view, ppo=make_ppo_config({**dataclasses.asdict(view.ppo), **values}))
        for view in settings.each_behavior()])
