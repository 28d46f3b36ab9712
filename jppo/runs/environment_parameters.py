"""ML-Agents' ``environment_parameters``: constants, samplers and curricula (release 19).

    environment_parameters:
      gravity: 9.81                                  # a constant
      mass:                                          # a sampler
        sampler_type: uniform                        # uniform | gaussian | multirangeuniform
        sampler_parameters: {min_value: 0.5, max_value: 10, seed: 7}
      scale:                                         # a curriculum
        curriculum:
          - name: small
            completion_criteria: {measure: reward, behavior: 3DBall, threshold: 50,
                                  min_lesson_length: 100, signal_smoothing: true}
            value: 0.75
          - name: any
            value: {sampler_type: uniform, sampler_parameters: {min_value: 0.75, max_value: 3}}

As ML-Agents' ``mlagents/trainers/settings.py`` reads it (``ParameterRandomizationSettings``,
``UniformSettings`` (min 0, max 1), ``GaussianSettings`` (mean 1, st_dev 1),
``MultiRangeUniformSettings`` (intervals [[0, 1]]), ``CompletionCriteriaSettings``,
``Lesson``, ``EnvironmentParameterSettings``), with the same defaults and checks, and these
refusals where ML-Agents would drop or misread a setting: an unknown key anywhere, a
``st_dev`` below 0, a number that is not finite.

A sampler's ``seed`` left out (-1) becomes ``run seed + offset`` with the offset counting,
in file order, every lesson value of every parameter whose seed was left out (constants
included), as ML-Agents' ``EnvironmentParameterManager._set_sampler_seeds`` does.

``normalize`` turns the YAML value into plain data for ``RunSettings`` (a constant stays a
float, so everything that took constants still does; samplers and curricula become ML-Agents'
canonical mappings); ``plan`` turns that into typed ``Parameter`` objects with the seeds
resolved; ``Curriculum`` advances lessons as ``EnvironmentParameterManager.update_lessons``
does; ``channel_calls`` lists the ``EnvironmentParametersChannel`` calls mlagents-learn makes.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import warnings
from typing import Optional

import numpy as np

from jppo.core.config import ConfigWarning
from jppo.errors import UserError, brief
from jppo.runs.config_file import number_text

SAMPLER_TYPES = ("uniform", "gaussian", "multirangeuniform", "constant")
# sampler_type -> its sampler_parameters and their defaults (ML-Agents' attrs classes).
SAMPLER_DEFAULTS = {
    "uniform": {"min_value": 0.0, "max_value": 1.0},
    "gaussian": {"mean": 1.0, "st_dev": 1.0},
    "multirangeuniform": {"intervals": [[0.0, 1.0]]},
    "constant": {"value": 0.0},
}
CRITERIA_DEFAULTS = {"measure": "reward", "min_lesson_length": 0, "signal_smoothing": True,
                     "threshold": 0.0, "require_reset": False}
MEASURES = ("progress", "reward")
_INT32_MIN, _INT32_MAX = -2**31, 2**31 - 1
LESSON_TAG = "Environment/Lesson Number/{}"  # ML-Agents' TensorBoard tag
# ML-Agents' signal smoothing: measure = 0.25 * previous + 0.75 * mean of the reward buffer.
SMOOTHING = 0.25


@dataclasses.dataclass(frozen=True)
class Sampler:
    """One lesson's value: ``kind`` in ``SAMPLER_TYPES``; ``numbers``: constant (value,),
    uniform (min, max), gaussian (mean, st_dev), multirangeuniform the intervals flattened
    (min0, max0, min1, max1, ...); ``seed`` -1 until ``plan`` resolves it."""

    kind: str
    numbers: tuple
    seed: int = -1

    @property
    def intervals(self) -> list[tuple[float, float]]:
        """The ranges a uniform or multi-range sampler draws from."""
        return list(zip(self.numbers[0::2], self.numbers[1::2]))

    def describe(self) -> str:
        if self.kind == "constant":
            return f"{self.numbers[0]:g}"
        if self.kind == "gaussian":
            return f"gaussian(mean={self.numbers[0]:g}, st_dev={self.numbers[1]:g}, seed={self.seed})"
        ranges = ", ".join(f"[{a:g}, {b:g}]" for a, b in self.intervals)
        return f"{self.kind}({ranges}, seed={self.seed})"


@dataclasses.dataclass(frozen=True)
class Criteria:
    """``CompletionCriteriaSettings``: when a lesson ends."""

    behavior: str
    measure: str = "reward"
    min_lesson_length: int = 0
    signal_smoothing: bool = True
    threshold: float = 0.0
    require_reset: bool = False


@dataclasses.dataclass(frozen=True)
class Lesson:
    name: str
    value: Sampler
    criteria: Optional[Criteria] = None


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One environment parameter: one lesson (a constant or a sampler) or a curriculum."""

    name: str
    lessons: tuple

    @property
    def is_curriculum(self) -> bool:
        return len(self.lessons) > 1 or self.lessons[0].criteria is not None


# ---------------------------------------------------------------- reading the YAML


def _number(value, where: str, kind: str = "float"):
    value = number_text(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where} = {brief(value)} has the wrong type; it must be a number.")
    try:
        finite = math.isfinite(value)
    except OverflowError:
        finite = False
    if not finite:
        raise UserError(f"{where} = {brief(value)} is not allowed; an environment parameter must "
                        "be a finite number.")
    if kind == "int":
        if not float(value).is_integer() or not _INT32_MIN <= value <= _INT32_MAX:
            raise UserError(f"{where} = {brief(value)} is not allowed; it must be a whole number "
                            f"from {_INT32_MIN} to {_INT32_MAX}.")
        return int(value)
    return float(value)


def _mapping(value, where: str, allowed) -> dict:
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a mapping, not {brief(value)}.")
    for key in value:
        if key not in allowed:
            raise UserError(f"unknown key {brief(key)} in {where}; allowed keys are: "
                            f"{', '.join(sorted(allowed))}.")
    return value


def _sampler(value, where: str) -> Sampler:
    """``ParameterRandomizationSettings.structure``: a number is a constant, else a mapping
    with ``sampler_type`` and ``sampler_parameters``."""
    if not isinstance(value, dict):
        return Sampler("constant", (_number(value, where),))
    _mapping(value, where, ("sampler_type", "sampler_parameters"))
    for key in ("sampler_type", "sampler_parameters"):
        if key not in value:
            raise UserError(f"{where} has no {key}; a sampler is {{sampler_type: uniform, "
                            "sampler_parameters: {min_value: ..., max_value: ...}} (or gaussian, "
                            "multirangeuniform), a constant a plain number.")
    kind = value["sampler_type"]
    if kind not in SAMPLER_TYPES:
        raise UserError(f"{where}.sampler_type = {brief(kind)} is not allowed; use one of "
                        f"{', '.join(SAMPLER_TYPES)}.")
    here = f"{where}.sampler_parameters"
    given = _mapping(value["sampler_parameters"] or {}, here, list(SAMPLER_DEFAULTS[kind]) + ["seed"])
    params = {**SAMPLER_DEFAULTS[kind], **{k: v for k, v in given.items() if v is not None}}
    seed = _number(params.pop("seed", -1), f"{here}.seed", "int")
    if kind == "constant":
        numbers = (_number(params["value"], f"{here}.value"),)
    elif kind == "uniform":
        low, high = (_number(params[k], f"{here}.{k}") for k in ("min_value", "max_value"))
        if low > high:
            raise UserError(f"{here}: min_value {low:g} is greater than max_value {high:g}.")
        numbers = (low, high)
    elif kind == "gaussian":
        mean, std = _number(params["mean"], f"{here}.mean"), _number(params["st_dev"], f"{here}.st_dev")
        if std < 0:
            raise UserError(f"{here}.st_dev = {std:g} is not allowed; a standard deviation is >= 0.")
        numbers = (mean, std)
    else:
        intervals = params["intervals"]
        if not isinstance(intervals, list) or not intervals:
            raise UserError(f"{here}.intervals = {brief(intervals)} is not allowed; give a list of "
                            "[min, max] pairs such as [[7, 10], [15, 20]].")
        numbers = ()
        for i, pair in enumerate(intervals):
            if not isinstance(pair, list) or len(pair) != 2:
                raise UserError(f"{here}.intervals[{i}] = {brief(pair)} is not allowed; each "
                                "interval is [min, max], exactly two numbers.")
            low, high = (_number(v, f"{here}.intervals[{i}]") for v in pair)
            if low > high:
                raise UserError(f"{here}.intervals[{i}]: min {low:g} is greater than max {high:g}.")
            numbers += (low, high)
    return Sampler(kind, numbers, seed)


def _criteria(value, where: str) -> Criteria:
    _mapping(value, where, ["behavior"] + list(CRITERIA_DEFAULTS))
    if not isinstance(value.get("behavior"), str) or not value["behavior"]:
        raise UserError(f"{where}.behavior = {brief(value.get('behavior'))} is not allowed; name "
                        "the behavior whose training decides the lesson.")
    given = {k: v for k, v in value.items() if v is not None}
    merged = {**CRITERIA_DEFAULTS, **given}
    if merged["measure"] not in MEASURES:
        raise UserError(f"{where}.measure = {brief(merged['measure'])} is not allowed; use "
                        "progress or reward.")
    for key in ("signal_smoothing", "require_reset"):
        if not isinstance(merged[key], bool):
            raise UserError(f"{where}.{key} = {brief(merged[key])} has the wrong type; it must be "
                            "true or false.")
    length = _number(merged["min_lesson_length"], f"{where}.min_lesson_length", "int")
    if length < 0:
        raise UserError(f"{where}.min_lesson_length = {length} is not allowed; it counts "
                        "episodes, >= 0.")
    threshold = _number(merged["threshold"], f"{where}.threshold")
    if merged["measure"] == "progress" and not 0.0 <= threshold <= 1.0:
        raise UserError(f"{where}.threshold = {threshold:g} is not allowed; with measure progress "
                        "the threshold is a fraction of max_steps, from 0 to 1.")
    return Criteria(merged["behavior"], merged["measure"], length, merged["signal_smoothing"],
                    threshold, merged["require_reset"])


def _parameter(name: str, value) -> Parameter:
    where = f"environment_parameters.{name}"
    if not (isinstance(value, dict) and "curriculum" in value):
        return Parameter(name, (Lesson(name, _sampler(value, where)),))
    _mapping(value, where, ("curriculum",))
    lessons = value["curriculum"]
    if not isinstance(lessons, list) or not lessons:
        raise UserError(f"{where}.curriculum must be a list of lessons, not {brief(lessons)}.")
    out = []
    for i, lesson in enumerate(lessons):
        here = f"{where}.curriculum[{i}]"
        _mapping(lesson, here, ("name", "value", "completion_criteria"))
        for key in ("name", "value"):
            if lesson.get(key) is None:
                raise UserError(f"{here} has no {key}; a lesson has a name, a value and (except "
                                "the last) completion_criteria.")
        criteria = lesson.get("completion_criteria")
        if criteria is None and i < len(lessons) - 1:
            raise UserError(f"{here} ({lesson['name']!s}) has no completion_criteria; every "
                            "lesson but the last needs one.")
        if criteria is not None and i == len(lessons) - 1 and len(lessons) > 1:
            warnings.warn(f"{here}.completion_criteria: the last lesson never ends; its "
                          "completion_criteria are ignored (as ML-Agents does).", ConfigWarning,
                          stacklevel=2)
            criteria = None
        out.append(Lesson(str(lesson["name"]), _sampler(lesson["value"], f"{here}.value"),
                          None if criteria is None else _criteria(criteria, f"{here}.completion_criteria")))
    return Parameter(name, tuple(out))


def _unparse_sampler(s: Sampler):
    if s.kind == "constant" and s.seed == -1:
        return s.numbers[0]
    names = {"constant": ("value",), "uniform": ("min_value", "max_value"),
             "gaussian": ("mean", "st_dev")}
    if s.kind == "multirangeuniform":
        params = {"intervals": [list(p) for p in s.intervals]}
    else:
        params = dict(zip(names[s.kind], s.numbers))
    if s.seed != -1:
        params["seed"] = s.seed
    return {"sampler_type": s.kind, "sampler_parameters": params}


def _unparse(p: Parameter):
    if not p.is_curriculum:
        return _unparse_sampler(p.lessons[0].value)
    lessons = []
    for lesson in p.lessons:
        entry = {"name": lesson.name, "value": _unparse_sampler(lesson.value)}
        if lesson.criteria is not None:
            entry["completion_criteria"] = dataclasses.asdict(lesson.criteria)
        lessons.append(entry)
    return {"curriculum": lessons}


def parse(value) -> list[Parameter]:
    """The YAML's ``environment_parameters`` (None or a mapping) as typed parameters, seeds
    as written (-1: not given); a ``UserError`` of one sentence for a mistake."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise UserError(f"environment_parameters must be a mapping of names to values, not "
                        f"{brief(value)}.")
    out = []
    for key, v in value.items():
        if not isinstance(key, str) or not key or len(key) > 60:
            raise UserError(f"environment_parameters: the name {brief(key)} is not allowed; a "
                            "parameter's name is text of 1 to 60 characters.")
        out.append(_parameter(key, v))
    return out


def normalize(value) -> dict:
    """``environment_parameters`` checked and written as plain data: a constant as a float, a
    sampler or curriculum as ML-Agents' canonical mapping (defaults filled in)."""
    return {p.name: _unparse(p) for p in parse(value)}


def plan(value: dict, run_seed: int) -> list[Parameter]:
    """``normalize``'s output as typed parameters, every seed left out resolved to
    ``run_seed + offset`` (ML-Agents' ``_set_sampler_seeds``)."""
    offset, out = 0, []
    for p in parse(value):
        lessons = []
        for lesson in p.lessons:
            if lesson.value.seed == -1:
                lesson = dataclasses.replace(lesson, value=dataclasses.replace(
                    lesson.value, seed=run_seed + offset))
                offset += 1
            lessons.append(lesson)
        out.append(dataclasses.replace(p, lessons=tuple(lessons)))
    return out


def check_behaviors(parameters: list[Parameter], behaviors) -> None:
    """Every completion criterion measures a behavior this run trains (ML-Agents would wait
    for it forever)."""
    for p in parameters:
        for i, lesson in enumerate(p.lessons):
            if lesson.criteria is not None and lesson.criteria.behavior not in behaviors:
                raise UserError(f"environment_parameters.{p.name}.curriculum[{i}].completion_"
                                f"criteria.behavior = {lesson.criteria.behavior!r} is not a "
                                f"behavior of this run ({', '.join(map(repr, behaviors))}); the "
                                "lesson could never end.")


# ---------------------------------------------------------------- what Unity is sent


def channel_calls(samplers: dict) -> list[tuple]:
    """``{name: Sampler}`` as the ``EnvironmentParametersChannel`` calls mlagents-learn makes
    (each sampler's ``apply``): ``(method, name, *arguments)``; a constant is
    ``set_float_parameter`` (its seed unused)."""
    calls = []
    for name, s in samplers.items():
        if s.kind == "constant":
            calls.append(("set_float_parameter", name, s.numbers[0]))
        elif s.kind == "uniform":
            calls.append(("set_uniform_sampler_parameters", name, s.numbers[0], s.numbers[1], s.seed))
        elif s.kind == "gaussian":
            calls.append(("set_gaussian_sampler_parameters", name, s.numbers[0], s.numbers[1], s.seed))
        else:
            calls.append(("set_multirangeuniform_sampler_parameters", name,
                          [list(p) for p in s.intervals], s.seed))
    return calls


# ---------------------------------------------------------------- lessons


class Curriculum:
    """Lesson numbers and smoothed rewards of a run's parameters, advanced as ML-Agents'
    ``EnvironmentParameterManager.update_lessons`` and ``CompletionCriteriaSettings.
    need_increment`` do: a lesson ends once the reward buffer holds ``min_lesson_length``
    episodes and the measure, ``progress`` (steps / max_steps) or ``reward`` (the buffer's mean,
    smoothed ``0.25 * previous + 0.75 * mean`` with ``signal_smoothing``), exceeds the
    threshold. The reward buffer keeps the last ``max(1, longest min_lesson_length)`` episode
    returns and is cleared whenever a lesson changes."""

    def __init__(self, parameters: list[Parameter], lessons: Optional[list[int]] = None,
                 smoothed: Optional[list[float]] = None):
        self.parameters = parameters
        self.lessons = list(lessons) if lessons is not None else [0] * len(parameters)
        self.smoothed = list(smoothed) if smoothed is not None else [0.0] * len(parameters)
        lengths = [l.criteria.min_lesson_length for p in parameters for l in p.lessons
                   if l.criteria is not None]
        self._length = max([1] + lengths)
        # Episode returns per behavior (None: the run's only behavior), as ML-Agents keeps a
        # reward buffer per trainer and a lesson reads its criteria's behavior's.
        self.rewards: dict = {}

    def samplers(self) -> dict:
        """``{name: Sampler}`` of every parameter's current lesson."""
        return {p.name: p.lessons[n].value for p, n in zip(self.parameters, self.lessons)}

    def lesson_numbers(self) -> dict:
        return {p.name: n for p, n in zip(self.parameters, self.lessons)}

    def lesson_scalars(self) -> dict:
        """ML-Agents' TensorBoard scalars ``Environment/Lesson Number/<parameter>``."""
        return {LESSON_TAG.format(k): float(v) for k, v in self.lesson_numbers().items()}

    def announce(self, names: list[str]) -> list[str]:
        """One line per changed parameter, as mlagents-learn logs it."""
        lines = []
        for p, n in zip(self.parameters, self.lessons):
            if p.name in names:
                lesson = p.lessons[n]
                lines.append(f"parameter {p.name!r} is now in lesson {lesson.name!r} "
                             f"({lesson.value.describe()})")
        return lines

    def add_rewards(self, returns, behavior: Optional[str] = None) -> None:
        """Episode returns of ``behavior`` (None: the run trains one), oldest first."""
        buffer = self.rewards.setdefault(behavior, collections.deque(maxlen=self._length))
        buffer.extend(float(r) for r in returns)

    def update(self, progress) -> tuple[list[str], bool]:
        """Advance what is due; ``progress`` is steps / max_steps of the run's one behavior, or
        ``{behavior: progress}``. Returns (names of parameters whose lesson changed, whether a
        changed lesson asks for ``require_reset``)."""
        changed, reset = [], False
        for i, p in enumerate(self.parameters):
            lesson = p.lessons[self.lessons[i]]
            if lesson.criteria is None or self.lessons[i] + 1 >= len(p.lessons):
                continue
            behavior = lesson.criteria.behavior
            rewards = self.rewards.get(behavior, self.rewards.get(None, ()))
            measured = progress.get(behavior, 0.0) if isinstance(progress, dict) else progress
            due, self.smoothed[i] = need_increment(lesson.criteria, measured, list(rewards),
                                                   self.smoothed[i])
            if due:
                self.lessons[i] += 1
                changed.append(p.name)
                reset = reset or lesson.criteria.require_reset
        if changed:  # every behavior's buffer, as ML-Agents clears every trainer's
            for buffer in self.rewards.values():
                buffer.clear()
        return changed, reset


def need_increment(criteria: Criteria, progress: float, rewards: list,
                   smoothed: float) -> tuple[bool, float]:
    """``CompletionCriteriaSettings.need_increment``: (lesson over, new smoothed value)."""
    if len(rewards) < criteria.min_lesson_length:
        return False, smoothed
    if criteria.measure == "progress":
        return progress > criteria.threshold, smoothed
    if not rewards:
        return False, smoothed
    measure = float(np.mean(rewards))
    if math.isnan(measure):
        return False, smoothed
    if criteria.signal_smoothing:
        measure = SMOOTHING * smoothed + (1 - SMOOTHING) * measure
        smoothed = measure
    return measure > criteria.threshold, smoothed


__all__ = ["Criteria", "Curriculum", "LESSON_TAG", "Lesson", "Parameter", "SAMPLER_TYPES",
           "Sampler", "channel_calls", "check_behaviors", "need_increment", "normalize", "parse",
           "plan"]
