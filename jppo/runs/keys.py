"""Every key of ML-Agents' trainer configuration, and what jppo does with it: one table.

The schema is release 19's (mlagents 0.28.0, ``mlagents/trainers/settings.py``: ``RunOptions``,
``TrainerSettings``, ``PPOSettings``, ``NetworkSettings`` with ``MemorySettings``, the reward
signals' settings, ``SelfPlaySettings``, ``BehavioralCloningSettings``, ``EnvironmentSettings``,
``EngineSettings``, ``CheckpointSettings``, ``TorchSettings``), with the defaults of its
command-line parser (``cli_utils.py``), plus the few keys of later releases jppo already read
(``even_checkpoints``, ``env_settings.timeout_wait``, ``hyperparameters.shared_critic``) and
jppo's own ``jppo:`` section. Each key is in exactly one class:

- **honoured**: implemented; the value is used.
- **harmless**: it has no effect on what jppo trains (threading, the torch device, image
  encoders on scenes jppo can train, which have none, the render window); accepted, and a value
  other than ML-Agents' default is named in one warning line per run.
- **not implemented**: refused when it asks for something jppo does not do: one sentence
  naming the key and what to do, exit 2, nothing written. ``null`` is always accepted, and so
  is a value in ``inert`` (what jppo does anyway: ``memory: null``, ``deterministic: false``).

ML-Agents' default value of a not-implemented key: ``mlagents-learn`` writes every key with its
value into ``results/<run>/configuration.yaml``, so its resolved files hold ``num_areas: 1``
and ``goal_conditioning_type: hyper``. Refusing those would refuse every resolved file;
accepting them silently would drop a setting. They are accepted with one warning line naming
each ("ML-Agents' default, which jppo does not do"), and any other value is refused: the user
who wrote the value on purpose gets a refusal, the user replaying ML-Agents' defaults gets told.

Values are type-checked in every class. ``<behavior>`` stands for any behavior name; the
trainer keys are the same under ``default_settings``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

HONOURED, HARMLESS, NOT_IMPLEMENTED = "honoured", "harmless", "not implemented"
# A key standing for any name (a behavior; an environment parameter).
BEHAVIOR = "<behavior>"
PARAMETER = "<parameter>"


@dataclasses.dataclass(frozen=True)
class Key:
    """One key: its dotted path, its type, ML-Agents' default and its class.

    ``kind``: "int", "float", "bool", "str", "section" (a mapping of keys listed here),
    "mapping" (any mapping, read by its own parser), "list" (of strings), or "a|b|c" (one of
    these strings). ``target``: for an honoured leaf, where the value goes ("ppo.<field>",
    "run.<field>", several separated by spaces). ``inert``: values of a not-implemented key
    that ask for nothing jppo does not do. ``note``: what jppo does, or what to do instead."""

    path: str
    kind: str
    default: Any
    cls: str
    note: str = ""
    target: str = ""
    inert: tuple = ()

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]


def _network(prefix: str, cls_of_all: Optional[str] = None, unused: str = "") -> list[Key]:
    """NetworkSettings' keys under ``prefix``; every key in ``cls_of_all`` with the note
    ``unused`` if given (a reward signal's network)."""

    def k(name, kind, default, cls, note="", target="", inert=()):
        if cls_of_all:
            return Key(f"{prefix}.{name}", kind, default, cls_of_all, unused)
        return Key(f"{prefix}.{name}", kind, default, cls, note, target, inert)

    memory = "LSTM memory is not implemented (issue 16); remove it or set it to null"
    keys = [
        k("normalize", "bool", False, HONOURED, target="ppo.normalize"),
        k("hidden_units", "int", 128, HONOURED, target="ppo.hidden_units"),
        k("num_layers", "int", 2, HONOURED, target="ppo.num_layers"),
        k("vis_encode_type", "simple|nature_cnn|resnet|match3|fully_connected", "simple", HONOURED,
          "the encoder of each image sensor, with ML-Agents' layers and minimum resolutions "
          "(jppo.core.encoders); Unity scenes with cameras and ONNX export of image encoders are "
          "not supported yet", target="ppo.vis_encode_type"),
        k("memory", "section", None, NOT_IMPLEMENTED, memory),
        k("goal_conditioning_type", "hyper|none", "hyper", NOT_IMPLEMENTED,
          "jppo feeds goal-signal observations to the body like any other input, as 'none' does; "
          "set it to none or null", inert=("none",)),
        k("deterministic", "bool", False, NOT_IMPLEMENTED,
          "jppo samples actions while training; set it to false or null", inert=(False,)),
    ]
    keys += [k("memory.sequence_length", "int", 64, NOT_IMPLEMENTED, memory),
             k("memory.memory_size", "int", 128, NOT_IMPLEMENTED, memory)]
    return keys


def _signal(prefix: str, signal: str, extra: list[tuple]) -> list[Key]:
    note = (f"the {signal} reward signal is not implemented; jppo trains on the extrinsic reward "
            "only, so remove it")
    keys = [Key(f"{prefix}.{signal}", "section", None, NOT_IMPLEMENTED, note)]
    for name, kind, default in [("gamma", "float", 0.99), ("strength", "float", 1.0),
                                ("network_settings", "section", None), *extra]:
        keys.append(Key(f"{prefix}.{signal}.{name}", kind, default, NOT_IMPLEMENTED, note))
    return keys + _network(f"{prefix}.{signal}.network_settings", NOT_IMPLEMENTED, note)


def _trainer(prefix: str) -> list[Key]:
    """TrainerSettings (PPO) under ``prefix`` (``behaviors.<behavior>`` or ``default_settings``)."""
    h = f"{prefix}.hyperparameters"
    sched = "linear|constant"
    signals = f"{prefix}.reward_signals"
    rate = [("learning_rate", "float", 3e-4), ("encoding_size", "int", None)]
    self_play = "self-play is not implemented; remove self_play or set it to null"
    cloning = ("behavioral cloning is not implemented; remove behavioral_cloning or set it to "
               "null")
    return [
        Key(prefix, "section", None, HONOURED),
        Key(f"{prefix}.trainer_type", "ppo|sac|poca", "ppo", NOT_IMPLEMENTED,
            "jppo trains trainer_type 'ppo' only", inert=("ppo",)),
        Key(h, "section", None, HONOURED),
        Key(f"{h}.batch_size", "int", 1024, HONOURED, target="ppo.batch_size"),
        Key(f"{h}.buffer_size", "int", 10240, HONOURED, target="ppo.buffer_size"),
        Key(f"{h}.learning_rate", "float", 3e-4, HONOURED, target="ppo.learning_rate"),
        Key(f"{h}.learning_rate_schedule", sched, "linear", HONOURED,
            target="ppo.learning_rate_schedule"),
        Key(f"{h}.beta", "float", 5e-3, HONOURED, target="ppo.beta"),
        Key(f"{h}.epsilon", "float", 0.2, HONOURED, target="ppo.epsilon"),
        Key(f"{h}.lambd", "float", 0.95, HONOURED, target="ppo.lambd"),
        Key(f"{h}.num_epoch", "int", 3, HONOURED, target="ppo.num_epoch"),
        Key(f"{h}.beta_schedule", sched, "linear", HONOURED, "unset: learning_rate_schedule's",
            target="ppo.beta_schedule"),
        Key(f"{h}.epsilon_schedule", sched, "linear", HONOURED, "unset: learning_rate_schedule's",
            target="ppo.epsilon_schedule"),
        Key(f"{h}.shared_critic", "bool", False, NOT_IMPLEMENTED,
            "(a key of ML-Agents releases after 19) a critic sharing the actor's body is not "
            "implemented; set it to false or null", inert=(False,)),
        Key(f"{prefix}.network_settings", "section", None, HONOURED),
        *_network(f"{prefix}.network_settings"),
        Key(signals, "section", None, HONOURED),
        Key(f"{signals}.extrinsic", "section", None, HONOURED),
        Key(f"{signals}.extrinsic.gamma", "float", 0.99, HONOURED, target="ppo.gamma"),
        Key(f"{signals}.extrinsic.strength", "float", 1.0, HONOURED, target="ppo.strength"),
        Key(f"{signals}.extrinsic.network_settings", "section", None, HARMLESS,
            "ML-Agents' extrinsic reward signal does not use a network either"),
        *_network(f"{signals}.extrinsic.network_settings", HARMLESS,
                  "ML-Agents' extrinsic reward signal does not use a network either"),
        *_signal(signals, "gail", [*rate, ("use_actions", "bool", False),
                                   ("use_vail", "bool", False), ("demo_path", "str", None)]),
        *_signal(signals, "curiosity", rate),
        *_signal(signals, "rnd", [("learning_rate", "float", 1e-4),
                                  ("encoding_size", "int", None)]),
        Key(f"{prefix}.init_path", "str", None, HONOURED,
            "start from another run's policy: a run folder or a checkpoint file (a bare file "
            "name is looked up in initialize_from's run)", target="run.init_path"),
        Key(f"{prefix}.keep_checkpoints", "int", 5, HONOURED, target="run.keep_checkpoints"),
        Key(f"{prefix}.even_checkpoints", "bool", False, HONOURED,
            "(a key of ML-Agents releases after 19) true: checkpoint_interval = max_steps / "
            "keep_checkpoints",
            target="run.even_checkpoints"),
        Key(f"{prefix}.checkpoint_interval", "int", 500_000, HONOURED,
            target="run.checkpoint_interval"),
        Key(f"{prefix}.max_steps", "int", 500_000, HONOURED, target="ppo.max_steps"),
        Key(f"{prefix}.time_horizon", "int", 64, HONOURED, target="ppo.time_horizon"),
        Key(f"{prefix}.summary_freq", "int", 50_000, HONOURED, target="run.summary_freq"),
        Key(f"{prefix}.threaded", "bool", False, HARMLESS,
            "jppo's update is one jitted program; there is no trainer thread"),
        Key(f"{prefix}.self_play", "section", None, NOT_IMPLEMENTED, self_play),
        *[Key(f"{prefix}.self_play.{n}", kind, d, NOT_IMPLEMENTED, self_play) for n, kind, d in (
            ("save_steps", "int", 20000), ("team_change", "int", 100000),
            ("swap_steps", "int", 2000), ("window", "int", 10),
            ("play_against_latest_model_ratio", "float", 0.5), ("initial_elo", "float", 1200.0))],
        Key(f"{prefix}.behavioral_cloning", "section", None, NOT_IMPLEMENTED, cloning),
        *[Key(f"{prefix}.behavioral_cloning.{n}", kind, d, NOT_IMPLEMENTED, cloning)
          for n, kind, d in (("demo_path", "str", None), ("steps", "int", 0),
                             ("strength", "float", 1.0), ("samples_per_update", "int", 0),
                             ("num_epoch", "int", None), ("batch_size", "int", None))],
        Key(f"{prefix}.framework", "str", None, HARMLESS,
            "deprecated by ML-Agents, which drops it with a warning too"),
    ]


_RESTARTS = ("per Unity worker, as ML-Agents: a build that crashed, exited or timed out while "
             "stepping is restarted and the run goes on (the editor is never restarted); -1: no "
             "limit")
_FROM_CLI = "jppo reads it from the command line only; remove it and pass {flag}"

KEYS: tuple[Key, ...] = (
    Key("behaviors", "section", None, HONOURED,
        "one section per behavior; several train together through Unity (a scene with several "
        "agent types), each with its own policy, files and model"),
    *_trainer(f"behaviors.{BEHAVIOR}"),
    Key("default_settings", "section", None, HONOURED,
        "merged under the behavior's own settings as ML-Agents merges it"),
    *_trainer("default_settings")[1:],
    Key("env_settings", "section", None, HONOURED),
    Key("env_settings.env_path", "str", None, HONOURED,
        "a Unity build, 'editor', a JAX environment or gymnasium:<id>", target="run.env"),
    Key("env_settings.env_args", "list", None, NOT_IMPLEMENTED,
        "passing extra arguments to the Unity build is not implemented; remove it or set it to "
        "null"),
    Key("env_settings.base_port", "int", 5005, HONOURED, target="run.base_port"),
    Key("env_settings.num_envs", "int", 1, HONOURED,
        "Unity instances (and JAX copies unless jppo.num_envs is given)",
        target="run.num_envs run.num_workers"),
    Key("env_settings.num_areas", "int", 1, NOT_IMPLEMENTED,
        "jppo does not ask the build for more training areas; remove it or set it to null"),
    Key("env_settings.seed", "int", -1, HONOURED,
        "-1 is a seed like any other: jppo runs are reproducible", target="run.seed"),
    Key("env_settings.max_lifetime_restarts", "int", 10, HONOURED,
        f"restarts over the run, {_RESTARTS}", target="run.max_lifetime_restarts"),
    Key("env_settings.restarts_rate_limit_n", "int", 1, HONOURED,
        f"restarts within restarts_rate_limit_period_s, {_RESTARTS}",
        target="run.restarts_rate_limit_n"),
    Key("env_settings.restarts_rate_limit_period_s", "int", 60, HONOURED,
        "seconds: the window of restarts_rate_limit_n", target="run.restarts_rate_limit_period_s"),
    Key("env_settings.timeout_wait", "float", 60.0, HONOURED,
        "(a key of ML-Agents releases after 19) seconds to wait for a Unity build",
        target="run.timeout_wait"),
    Key("engine_settings", "section", None, HONOURED),
    Key("engine_settings.width", "int", 84, HARMLESS,
        "the render window's size; jppo sends Unity ML-Agents' 84"),
    Key("engine_settings.height", "int", 84, HARMLESS,
        "the render window's size; jppo sends Unity ML-Agents' 84"),
    Key("engine_settings.quality_level", "int", 5, HARMLESS,
        "rendering quality; jppo sends ML-Agents' 5"),
    Key("engine_settings.time_scale", "float", 20.0, HONOURED, target="run.time_scale"),
    Key("engine_settings.target_frame_rate", "int", -1, NOT_IMPLEMENTED,
        "jppo sends ML-Agents' default -1; remove it or set it to -1", inert=(-1,)),
    Key("engine_settings.capture_frame_rate", "int", 60, NOT_IMPLEMENTED,
        "jppo sends ML-Agents' default 60; remove it or set it to 60", inert=(60,)),
    Key("engine_settings.no_graphics", "bool", False, HONOURED, target="run.no_graphics"),
    Key("environment_parameters", "mapping", None, HONOURED,
        "constants, samplers and curricula, sent to Unity or given to the JAX environment",
        target="run.environment_parameters"),
    Key(f"environment_parameters.{PARAMETER}.sampler_type", "str", None, HONOURED,
        "uniform, gaussian or multirangeuniform: drawn per episode in the JAX loop, sent "
        "through the environment-parameters channel to Unity (jppo.runs.environment_parameters)"),
    Key(f"environment_parameters.{PARAMETER}.sampler_parameters", "mapping", None, HONOURED,
        "the sampler's parameters and seed, as ML-Agents reads them"),
    Key(f"environment_parameters.{PARAMETER}.curriculum", "lessons", None, HONOURED,
        "lessons advancing on their completion_criteria, as ML-Agents' "
        "EnvironmentParameterManager does"),
    Key("checkpoint_settings", "section", None, HONOURED),
    Key("checkpoint_settings.run_id", "str", "ppo", HONOURED, target="run.run_id"),
    Key("checkpoint_settings.initialize_from", "str", None, HONOURED,
        "a run id under results_dir whose parameters and normalizer the run starts from "
        "(--initialize-from)", target="run.initialize_from"),
    Key("checkpoint_settings.load_model", "bool", False, NOT_IMPLEMENTED,
        _FROM_CLI.format(flag="--resume"), inert=(False,)),
    Key("checkpoint_settings.resume", "bool", False, NOT_IMPLEMENTED,
        _FROM_CLI.format(flag="--resume"), inert=(False,)),
    Key("checkpoint_settings.force", "bool", False, NOT_IMPLEMENTED,
        _FROM_CLI.format(flag="--force"), inert=(False,)),
    Key("checkpoint_settings.train_model", "bool", False, HARMLESS,
        "deprecated by ML-Agents (training is the default)"),
    Key("checkpoint_settings.inference", "bool", False, HONOURED,
        "run the trained policy without training, nothing written (--inference)",
        target="run.inference"),
    Key("checkpoint_settings.results_dir", "str", "results", HONOURED, target="run.results_dir"),
    Key("torch_settings", "section", None, HARMLESS, "jppo has no torch"),
    Key("torch_settings.device", "str", None, HARMLESS,
        "jppo has no torch; JAX picks its device (JAX_PLATFORMS)"),
    Key("debug", "bool", False, HARMLESS, "ML-Agents' debug logging; jppo has none"),
    # jppo's own section.
    Key("jppo", "section", None, HONOURED, "jppo's own keys"),
    Key("jppo.env", "str", None, HONOURED,
        "a JAX environment, a Unity build, 'editor' or gymnasium:<id>", target="run.env"),
    Key("jppo.num_envs", "int", None, HONOURED, "JAX environments side by side",
        target="run.num_envs"),
    Key("jppo.num_seeds", "int", 1, HONOURED, target="run.num_seeds"),
    Key("jppo.seed", "int", 0, HONOURED, target="run.seed"),
    Key("jppo.timeout_wait", "float", 60.0, HONOURED, target="run.timeout_wait"),
    Key("jppo.export_onnx", "bool", True, HONOURED, target="run.export_onnx"),
    Key("jppo.bind", "str", None, HONOURED, "the address jppo's sockets listen on (--bind)",
        target="run.bind"),
    Key("jppo.loss", "clip|kl_penalty|a2c", "clip", HONOURED, target="ppo.loss"),
    Key("jppo.network", "mlagents|seed|cleanrl", "mlagents", HONOURED, target="ppo.network"),
    Key("jppo.value_coef", "float", 0.5, HONOURED, target="ppo.value_coef"),
    Key("jppo.clip_value", "bool", True, HONOURED, target="ppo.clip_value"),
    Key("jppo.max_grad_norm", "float", None, HONOURED, target="ppo.max_grad_norm"),
    Key("jppo.kl_target", "float", 0.01, HONOURED, target="ppo.kl_target"),
    Key("jppo.kl_coef", "float", 1.0, HONOURED, target="ppo.kl_coef"),
    Key("jppo.adam_eps", "float", 1e-8, HONOURED, target="ppo.adam_eps"),
    Key("jppo.advantage_eps", "float", 1e-10, HONOURED, target="ppo.advantage_eps"),
    Key("jppo.obs_clip", "float", 5.0, HONOURED, target="ppo.obs_clip"),
    Key("jppo.run_record", "mapping", None, HONOURED,
        "what the run resolved at its start (environment, sizes, devices), written by jppo for "
        "the record; read back as nothing, since the run resolves it again"),
)

TABLE: dict[str, Key] = {k.path: k for k in KEYS}


def children(path: str) -> list[str]:
    """The names of the keys directly under the section ``path`` ("" for the top level)."""
    depth = path.count(".") + 1 if path else 0
    return [k.name for k in KEYS
            if k.path.count(".") == depth and (not path or k.path.startswith(path + "."))]


def pattern(path: list[str]) -> str:
    """The table path of the concrete key path ``path`` (behavior and parameter names become
    ``<behavior>`` and ``<parameter>``)."""
    out = list(path)
    if len(out) > 1 and out[0] == "behaviors":
        out[1] = BEHAVIOR
    if len(out) > 1 and out[0] == "environment_parameters":
        out[1] = PARAMETER
    return ".".join(out)


def shown(value) -> str:
    """A value as YAML spells it: null, true, 0.0003."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def markdown() -> str:
    """The table as the README shows it (the trainer keys once, under ``<behavior>``)."""
    rows = ["| key | type | ML-Agents' default | class | jppo |", "| --- | --- | --- | --- | --- |"]
    for key in KEYS:
        if key.path.startswith("default_settings."):
            continue
        note = key.note
        if key.cls == NOT_IMPLEMENTED and key.inert:
            note = f"accepted: {', '.join(shown(v) for v in key.inert)}. {note}"
        rows.append(f"| `{key.path}` | {key.kind.replace('|', ' or ')} | {shown(key.default)} | "
                    f"{key.cls} | {note} |")
    return "\n".join(rows) + "\n"


__all__ = ["BEHAVIOR", "HARMLESS", "HONOURED", "KEYS", "Key", "NOT_IMPLEMENTED", "PARAMETER",
           "TABLE", "children", "markdown", "pattern", "shown"]
