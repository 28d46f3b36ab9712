"""An ML-Agents configuration document checked against the key table (``jppo.runs.keys``).

Every key is looked up in the table: an unknown key is refused naming the keys allowed there,
a value of the wrong type is refused in every class, a not-implemented key asking for something
jppo does not do is refused by name. ``null`` is always accepted (as absent). What remains are
the honoured values, by their target ("ppo.batch_size", "run.seed"), and the keys named in the
run's one warning line.

``default_settings`` is merged under the behavior as ML-Agents' ``TrainerSettings.structure``
does: the default settings are first completed with ML-Agents' defaults (every trainer key, the
schedules of ``check_hyperparam_schedules``, an extrinsic signal when no reward signal is
given), then the behavior's own keys are laid over them key by key, nested sections merged
(``deep_update_dict``). So, as in ML-Agents, a behavior that sets ``learning_rate_schedule``
keeps the default settings' resolved ``beta_schedule``, and a behavior's ``reward_signals``
adds to the default settings' signals rather than replacing them.
"""
from __future__ import annotations

import copy
import dataclasses
import math

from jppo.errors import UserError, brief
from jppo.runs import keys as K
from jppo.runs.config_file import number_text

# Trainer keys ML-Agents' unstructured TrainerSettings does not hold (release 20 additions):
# the default settings are not completed with them. Nor with keys jppo does not honour: their
# defaults stay implicit, as they are when a behavior leaves them out (no warning line).
_NOT_COMPLETED = ("even_checkpoints",)
# Sections ML-Agents always holds (the others default to null: memory, self_play, ...).
_ALWAYS = ("hyperparameters", "network_settings", "reward_signals", "extrinsic")


@dataclasses.dataclass
class Checked:
    behavior: str
    values: dict = dataclasses.field(default_factory=dict)  # target -> value
    harmless: list = dataclasses.field(default_factory=list)  # "path = value"
    defaults: list = dataclasses.field(default_factory=list)  # "path = value"
    others: list = dataclasses.field(default_factory=list)  # the run's other behaviors, checked

    def warning(self) -> str | None:
        """The run's one warning line, or None."""
        parts = []
        if self.harmless:
            parts.append(f"{', '.join(self.harmless)} (no effect here)")
        if self.defaults:
            parts.append(f"{', '.join(self.defaults)} (ML-Agents' defaults, which jppo does not "
                         "do)")
        if not parts:
            return None
        return (f"accepted without effect: {'; '.join(parts)}; the README's configuration "
                "table says why.")


def typed(value, kind: str, name: str):
    """``value`` if it has the type ``kind`` (see ``keys.Key``), else a ``UserError``. Numbers
    are read as ML-Agents reads them: text that spells a number is that number (YAML 1.1's
    ``3e-4``), and an integer field takes a float whose value is whole."""
    if kind in ("int", "float"):
        value = number_text(value)
    if kind == "int" and isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise UserError(f"{name} = {brief(value)} is not a whole number; {name} must be an "
                            "integer.")
        value = int(value)
    if "|" in kind:
        choices = kind.split("|")
        if value not in choices:
            raise UserError(f"{name} = {brief(value)} is not allowed; {name} must be one of "
                            f"{', '.join(repr(c) for c in choices)}.")
        return value
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "section": isinstance(value, dict),
        "mapping": isinstance(value, dict),
        "list": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "lessons": isinstance(value, list) and all(isinstance(v, dict) for v in value),
    }[kind]
    if not ok:
        words = {"int": "an integer", "float": "a number", "bool": "true or false",
                 "str": "a string", "section": "a mapping of keys to values",
                 "mapping": "a mapping of keys to values", "list": "a list of strings",
                 "lessons": "a list of lessons (mappings)"}
        raise UserError(f"{name} = {brief(value)} has the wrong type; {name} must be "
                        f"{words[kind]}.")
    return float(value) if kind == "float" else value


def _label(path: list[str], key: K.Key) -> str:
    """How a sentence names the key: the bare name for an honoured trainer key (it is the
    PPOConfig field the later checks name), else the dotted path."""
    trainer = path[0] in ("behaviors", "default_settings")
    if key.cls == K.HONOURED and trainer and key.kind != "section":
        return path[-1]
    return ".".join(path)


def _where(path: list[str]) -> str:
    return ".".join(path) or "the top level"


def _walk(node: dict, path: list[str], out: Checked, record: bool, types_only: bool = False):
    """Check the section ``node`` at ``path``; ``record``: collect values and warnings;
    ``types_only``: check keys and types only (inside a section about to be refused, so a
    mistake in it is named first)."""
    allowed = K.children(K.pattern(path))
    for name, value in node.items():
        here = path + [str(name)]
        key = K.TABLE.get(K.pattern(here)) if isinstance(name, str) else None
        if key is None:
            raise UserError(f"unknown key {brief(name)} in {_where(path)}; allowed keys are: "
                            f"{', '.join(sorted(allowed))}.")
        if value is None:
            continue
        value = typed(value, key.kind, _label(here, key))
        if key.kind == "section":
            _walk(value, here, out, record, types_only or key.cls == K.NOT_IMPLEMENTED)
        if types_only:
            continue
        if key.cls == K.NOT_IMPLEMENTED:
            if any(_same(value, v) for v in key.inert):
                continue
            if key.kind != "section" and _same(value, key.default):
                if record:
                    out.defaults.append(f"{'.'.join(here)} = {K.shown(value)}")
                continue
            raise UserError(f"{'.'.join(here)} = {brief(value)} is not implemented by jppo: "
                            f"{key.note}.")
        if key.kind == "section":
            continue
        if key.cls == K.HARMLESS:
            if record and not _same(value, key.default):
                out.harmless.append(f"{'.'.join(here)} = {K.shown(value)}")
            continue
        if key.path == "environment_parameters":
            _typed_samplers(value)
        if record and key.target:
            for target in key.target.split():
                out.values[target] = value


def _same(value, default) -> bool:
    """Equal, with true never the same as 1."""
    return value == default and isinstance(value, bool) == isinstance(default, bool)


def _typed_samplers(parameters: dict):
    """A sampler's or curriculum's top keys type-checked here, as every key of the table; their
    contents are checked by ``jppo.runs.environment_parameters``."""
    for name, value in parameters.items():
        if isinstance(value, dict):
            for word in ("curriculum", "sampler_type", "sampler_parameters"):
                if word in value:
                    key = K.TABLE[f"environment_parameters.{K.PARAMETER}.{word}"]
                    typed(value[word], key.kind, f"environment_parameters.{name}.{word}")


def _completed(given: dict, prefix: str) -> dict:
    """The trainer section ``given`` (under ``default_settings`` at ``prefix``) completed with
    ML-Agents' defaults, as ``cattr.unstructure`` of the structured settings writes it."""
    out = {}
    for name in K.children(prefix):
        key = K.TABLE[f"{prefix}.{name}"]
        if name in given:
            value = given[name]
            if key.kind == "section" and isinstance(value, dict) and value is not None:
                value = (_signals(value, f"{prefix}.{name}") if name == "reward_signals"
                         else _completed(value, f"{prefix}.{name}"))
            out[name] = value
        elif (name in _NOT_COMPLETED or key.cls != K.HONOURED
              or (key.kind == "section" and name not in _ALWAYS)):
            continue  # left implicit, as if the behavior had left it out
        elif name == "reward_signals":
            out[name] = {"extrinsic": _completed({}, f"{prefix}.{name}.extrinsic")}
        elif key.kind == "section":
            out[name] = _completed({}, f"{prefix}.{name}")
        else:
            out[name] = key.default
    if prefix.endswith(".hyperparameters") and "learning_rate_schedule" in given:
        for name in ("beta_schedule", "epsilon_schedule"):  # check_hyperparam_schedules
            out[name] = given.get(name, given["learning_rate_schedule"])
    return out


def _signals(given: dict, prefix: str) -> dict:
    return {name: _completed(value, f"{prefix}.{name}") if isinstance(value, dict) else value
            for name, value in given.items()}


def _deep_update(base: dict, update: dict):
    """ML-Agents' ``deep_update_dict``: nested mappings merged, anything else replaced."""
    for key, value in update.items():
        if key in base and isinstance(base[key], dict) and isinstance(value, dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def check(data, source: str) -> Checked:
    """The document ``data`` checked, one behavior at a time (each merged over
    default_settings); the first behavior's ``Checked`` holds the others in ``others``, and
    the run's one warning line names every key accepted without effect, once."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source} must be a mapping of keys to values, not {brief(data)}.")
    behaviors = data.get("behaviors")
    if behaviors is not None and not isinstance(behaviors, dict):
        typed(behaviors, "section", "behaviors")
    behaviors = dict(behaviors or {})
    if not behaviors:
        raise UserError(f"{source} defines no behavior under 'behaviors'; give a section per "
                        "behavior, named as in the scene's Behavior Parameters (e.g. "
                        "behaviors: {3DBall: {...}}).")
    names = [str(b) for b in behaviors]
    if len(set(names)) != len(names):
        raise UserError(f"{source} names a behavior twice under 'behaviors' ({', '.join(names)}).")
    checked = [_check_behavior(data, str(name), spec) for name, spec in behaviors.items()]
    first = checked[0]
    first.others = checked[1:]
    for other in first.others:  # the run's keys are named once, a behavior's own each time
        first.harmless += [h for h in other.harmless if h not in first.harmless]
        first.defaults += [d for d in other.defaults if d not in first.defaults]
    return first


def _check_behavior(data: dict, behavior: str, spec) -> Checked:
    """The document as it applies to ``behavior``: its section merged over default_settings,
    the run's sections as they are."""
    data = dict(data)
    out = Checked(behavior=behavior)
    defaults = data.get("default_settings")
    if defaults is not None:
        _walk({"default_settings": defaults}, [], out, record=False)
        merged = copy.deepcopy(_completed(defaults, "default_settings"))
        if spec is not None:
            typed(spec, "section", f"behaviors.{behavior}")
            _deep_update(merged, copy.deepcopy(spec))
        spec = merged
    data["behaviors"] = {behavior: spec}
    data.pop("default_settings", None)
    # jppo's own section last: its keys win over ML-Agents' (jppo.seed over env_settings.seed).
    _walk(dict(sorted(data.items(), key=lambda item: item[0] == "jppo")), [], out, record=True)
    return out


__all__ = ["Checked", "check", "typed"]
