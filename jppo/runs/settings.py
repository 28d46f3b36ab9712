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
from typing import Any, Optional

import yaml

from jppo.core.config import ConfigError, PPOConfig, field_names
from jppo.errors import UserError, brief
from jppo.runs import shipped
from jppo.runs.config_file import number_text, read_yaml

# The main job's config: configs/3DBall.yaml, from the checkout or the installed package.
DEFAULT_CONFIG = shipped.default()


# ML-Agents keys jppo reads, per section; values are PPOConfig fields or run fields.
HYPERPARAMETERS = {k: k for k in ("batch_size", "buffer_size", "learning_rate", "beta", "epsilon",
                                  "lambd", "num_epoch", "learning_rate_schedule", "beta_schedule",
                                  "epsilon_schedule")}
NETWORK_SETTINGS = {"normalize": "normalize", "hidden_units": "hidden_units",
                    "num_layers": "num_layers"}
EXTRINSIC = {"gamma": "gamma", "strength": "strength"}
BEHAVIOR_CONFIG = {"max_steps": "max_steps", "time_horizon": "time_horizon"}
BEHAVIOR_RUN = ("summary_freq", "keep_checkpoints", "checkpoint_interval", "even_checkpoints")
# ML-Agents keys that are accepted and have no effect here (they concern features a vector-
# observation PPO run on JAX has no use for); a value that would change behaviour is refused.
IGNORED = {
    "hyperparameters": {"shared_critic": False},
    "network_settings": {"vis_encode_type": None, "goal_conditioning_type": None,
                         "deterministic": False, "memory": None},
    "behavior": {"threaded": None, "init_path": None},
    "extrinsic": {"network_settings": None},
}
TOP_LEVEL = ("behaviors", "env_settings", "engine_settings", "environment_parameters",
             "checkpoint_settings", "torch_settings", "debug", "jppo", "default_settings")
ENV_SETTINGS = ("env_path", "env_args", "base_port", "num_envs", "num_areas", "seed",
                "max_lifetime_restarts", "restarts_rate_limit_n", "restarts_rate_limit_period_s")
ENGINE_SETTINGS = ("width", "height", "quality_level", "time_scale", "target_frame_rate",
                   "capture_frame_rate", "no_graphics")
CHECKPOINT_SETTINGS = ("run_id", "initialize_from", "load_model", "resume", "force",
                       "train_model", "inference", "results_dir")
JPPO_PPO = ("loss", "network", "value_coef", "clip_value", "max_grad_norm", "kl_target",
            "kl_coef", "adam_eps", "advantage_eps", "obs_clip")
JPPO_RUN = ("env", "num_envs", "num_seeds", "seed", "timeout_wait", "export_onnx")

# Seeds and worker counts reach int32 arrays and Unity's protocol (an int32 seed).
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
# Unity's EngineConfigurationChannel clamps the time scale to [1, 100]; a value outside is
# refused rather than silently changed.
TIME_SCALE_RANGE = (1.0, 100.0)
MAX_TIMEOUT_WAIT = 86_400.0  # a day: longer means "forever" and overflows some waits
# A name that becomes a file or folder: at most this many bytes (UTF-8), leaving room under
# the usual 255-byte limit for suffixes such as "-seed12.onnx" and the atomic writer's ".tmp".
MAX_NAME_BYTES = 128


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything a training run needs besides the command line's file-system choices."""

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
    export_onnx: bool = True
    # Where jppo's listening sockets accept connections (--bind): None is localhost for the
    # gRPC servers Unity connects to, the --coordinator host for jax.distributed's.
    bind: Optional[str] = None

    def to_yaml_dict(self) -> dict:
        """The resolved settings, written to results/<run-id>/configuration.yaml."""
        run = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("ppo", "behavior")}
        return {"behavior": self.behavior, "ppo": dataclasses.asdict(self.ppo), "run": run}


def _where(path: list[str]) -> str:
    return ".".join(path)


def _mapping(value, path: list[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{_where(path)} must be a mapping of keys to values, not {brief(value)}.")
    return value


def _check_keys(section: dict, allowed, path: list[str]):
    for key in section:
        if key not in allowed:
            raise UserError(f"unknown key {brief(key)} in {_where(path) or 'the top level'}; allowed "
                            f"keys are: {', '.join(sorted(allowed))}.")


def _typed(value, kind, name: str):
    """``value`` if it has the type ``kind`` ("int", "float", "bool", "str"), else a UserError.
    Numbers are read as ML-Agents reads them (see the module docstring): text that spells a
    number is that number, and an integer field takes a float whose value is whole."""
    if kind in ("int", "float"):
        value = number_text(value)
    if kind == "int" and isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise UserError(f"{name} = {brief(value)} is not a whole number; {name} must be an "
                            "integer.")
        value = int(value)
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not ok:
        words = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
        raise UserError(f"{name} = {brief(value)} has the wrong type; {name} must be {words[kind]}.")
    return float(value) if kind == "float" else value


_PPO_TYPES = {f.name: ("int" if f.type in ("int",) else "float" if f.type in ("float",) else
                       "bool" if f.type == "bool" else "str" if f.type == "str" else None)
              for f in dataclasses.fields(PPOConfig)}


def _ppo_value(field: str, value):
    if value is None and field in ("max_grad_norm", "beta_schedule", "epsilon_schedule"):
        return None
    kind = _PPO_TYPES.get(field) or {"max_grad_norm": "float", "beta_schedule": "str",
                                     "epsilon_schedule": "str"}[field]
    return _typed(value, kind, field)


def _ignored(section: dict, kind: str, path: list[str]):
    for key, allowed in IGNORED[kind].items():
        if key in section and allowed is not None and section[key] not in (allowed, None):
            raise UserError(f"{_where(path + [key])} = {brief(section[key])} is not supported by jppo; "
                            f"leave it out or set it to {allowed!r}.")


def parse(data: Any, source: str = "the configuration") -> RunSettings:
    """``RunSettings`` from the parsed YAML document ``data``."""
    data = _mapping(data, [])
    _check_keys(data, TOP_LEVEL, [])
    behaviors = _mapping(data.get("behaviors"), ["behaviors"])
    if len(behaviors) != 1:
        names = ", ".join(behaviors) or "none"
        raise UserError(f"{source} must define exactly one behavior under 'behaviors' (found: "
                        f"{names}); jppo trains one behavior at a time.")
    behavior, spec = next(iter(behaviors.items()))
    path = ["behaviors", str(behavior)]
    spec = _mapping(spec, path)
    _check_keys(spec, set(BEHAVIOR_CONFIG) | set(BEHAVIOR_RUN) | set(IGNORED["behavior"]) |
                {"trainer_type", "hyperparameters", "network_settings", "reward_signals"}, path)
    if spec.get("trainer_type", "ppo") != "ppo":
        raise UserError(f"{_where(path + ['trainer_type'])} = {brief(spec['trainer_type'])} is not "
                        "supported; jppo trains trainer_type 'ppo' only.")
    _ignored(spec, "behavior", path)
    ppo: dict = {}
    run: dict = {}
    for section, keys, ignored in (("hyperparameters", HYPERPARAMETERS, "hyperparameters"),
                                   ("network_settings", NETWORK_SETTINGS, "network_settings")):
        values = _mapping(spec.get(section), path + [section])
        _check_keys(values, set(keys) | set(IGNORED[ignored]), path + [section])
        _ignored(values, ignored, path + [section])
        ppo.update({keys[k]: _ppo_value(keys[k], v) for k, v in values.items() if k in keys})
    signals = _mapping(spec.get("reward_signals"), path + ["reward_signals"])
    _check_keys(signals, ("extrinsic",), path + ["reward_signals"])
    extrinsic = _mapping(signals.get("extrinsic"), path + ["reward_signals", "extrinsic"])
    _check_keys(extrinsic, set(EXTRINSIC) | set(IGNORED["extrinsic"]),
                path + ["reward_signals", "extrinsic"])
    ppo.update({EXTRINSIC[k]: _ppo_value(EXTRINSIC[k], v) for k, v in extrinsic.items()
                if k in EXTRINSIC})
    ppo.update({BEHAVIOR_CONFIG[k]: _ppo_value(BEHAVIOR_CONFIG[k], spec[k])
                for k in BEHAVIOR_CONFIG if k in spec})
    for key in ("summary_freq", "keep_checkpoints", "checkpoint_interval"):
        if key in spec:
            run[key] = _positive_int(spec[key], key)
    even = _typed(spec.get("even_checkpoints", False), "bool", "even_checkpoints")

    env_settings = _mapping(data.get("env_settings"), ["env_settings"])
    _check_keys(env_settings, ENV_SETTINGS, ["env_settings"])
    if env_settings.get("env_path") is not None:
        run["env"] = _typed(env_settings["env_path"], "str", "env_settings.env_path")
    for key in ("num_envs", "seed", "base_port"):
        if env_settings.get(key) is not None:
            run[key] = _typed(env_settings[key], "int", f"env_settings.{key}")
    if "num_envs" in run:
        run["num_workers"] = run["num_envs"]
    engine = _mapping(data.get("engine_settings"), ["engine_settings"])
    _check_keys(engine, ENGINE_SETTINGS, ["engine_settings"])
    if engine.get("time_scale") is not None:
        run["time_scale"] = _typed(engine["time_scale"], "float", "engine_settings.time_scale")
    if engine.get("no_graphics") is not None:
        run["no_graphics"] = _typed(engine["no_graphics"], "bool", "engine_settings.no_graphics")
    checkpoint = _mapping(data.get("checkpoint_settings"), ["checkpoint_settings"])
    _check_keys(checkpoint, CHECKPOINT_SETTINGS, ["checkpoint_settings"])
    for key in ("run_id", "results_dir"):
        if checkpoint.get(key) is not None:
            run[key] = _typed(checkpoint[key], "str", f"checkpoint_settings.{key}")
    run["environment_parameters"] = _environment_parameters(data.get("environment_parameters"))

    own = _mapping(data.get("jppo"), ["jppo"])
    _check_keys(own, set(JPPO_PPO) | set(JPPO_RUN), ["jppo"])
    ppo.update({k: _ppo_value(k, v) for k, v in own.items() if k in JPPO_PPO})
    for key in ("num_envs", "num_seeds", "seed"):
        if own.get(key) is not None:
            run[key] = _typed(own[key], "int", f"jppo.{key}")
    if own.get("env") is not None:
        run["env"] = _typed(own["env"], "str", "jppo.env")
    if own.get("timeout_wait") is not None:
        run["timeout_wait"] = _typed(own["timeout_wait"], "float", "jppo.timeout_wait")
    if own.get("export_onnx") is not None:
        run["export_onnx"] = _typed(own["export_onnx"], "bool", "jppo.export_onnx")
    config = make_ppo_config(ppo)
    if even:
        run["checkpoint_interval"] = max(1, config.max_steps // run.get("keep_checkpoints", 5))
    return validate_run(RunSettings(behavior=str(behavior), ppo=config, **run))


def _positive_int(value, name: str) -> int:
    value = _typed(value, "int", name)
    if value < 1:
        raise UserError(f"{name} = {brief(value)} is not allowed; {name} must be an integer >= 1.")
    return value


def _environment_parameters(value) -> dict:
    """Constant environment parameters, finite numbers; ML-Agents' samplers and curricula are
    refused. (Unity receives them as float32; a JAX environment checks its own ranges.)"""
    params = _mapping(value, ["environment_parameters"])
    out = {}
    for key, v in params.items():
        name = key if isinstance(key, str) and len(key) <= 60 else brief(key)
        v = number_text(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UserError(f"environment_parameters.{name} = {brief(v)} is not supported; "
                            "jppo takes constant numbers (samplers and curricula are not "
                            "implemented).")
        if not _finite(v):
            raise UserError(f"environment_parameters.{name} = {brief(v)} is not allowed; an "
                            "environment parameter must be a finite number.")
        out[str(key)] = float(v)
    return out


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
    check_name("behavior name", settings.behavior)
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
    """``name=value`` pairs (value parsed as YAML) applied to the PPO hyperparameters."""
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
    merged = {**dataclasses.asdict(settings.ppo), **values}
    return dataclasses.replace(settings, ppo=make_ppo_config(merged))
