"""A trainer config file read as ML-Agents reads it: PyYAML's safe loader (YAML 1.1), with two
refusals where PyYAML would silently do what the user did not mean:

- a key given twice in one mapping is refused, naming both lines (PyYAML keeps the last);
- a document whose aliases expand to more than ``MAX_YAML_VALUES`` values is refused (a
  "billion laughs" file, whose values fill memory once printed or written back).

Numbers: YAML 1.1 reads ``3e-4`` and ``1e3`` as text (its floats need a dot and a signed
exponent). ML-Agents structures its settings with cattrs, which calls ``float(value)`` on a
float field and ``int(value)`` on an integer field (``mlagents/trainers/settings.py``,
``check_and_structure``), so ``learning_rate: 3e-4`` is 0.0003 and ``max_steps: 5.0e5`` (a
float) is 500000 there; ``number_text`` reads such text as the number it spells, and
``jppo.runs.settings`` takes a whole float for an integer field.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from jppo.errors import UserError, brief

# A trainer config holds a few hundred values; aliases expanding to more are refused.
MAX_YAML_VALUES = 100_000
# A number written as text: YAML 1.1 reads 3e-4, 1e3 and 1.0e3 as strings.
_NUMBER_TEXT = re.compile(r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?")


def number_text(value):
    """``value``, or the number it spells if it is text YAML 1.1 left unread (``'3e-4'``)."""
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        return float(value.strip().replace("_", ""))
    return value


class YamlDuplicate(yaml.YAMLError):
    """A key given twice in one mapping (PyYAML would silently keep the last)."""


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1, what ML-Agents uses) that refuses a key given twice in
    one mapping; keys brought in by a merge (``<<: *defaults``) may be overridden, as YAML
    means them to be."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = (key_node.tag, key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise YamlDuplicate(f"gives key {brief(key_node.value)} twice in one mapping "
                                        f"(lines {seen[key]} and {line}); keep one")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node, limit: int) -> int:
    """The number of values ``node`` stands for with every alias expanded (an alias counts its
    anchor's values again), or more than ``limit`` once it exceeds it; a node that contains
    itself counts as unlimited."""
    sizes: dict = {}
    open_nodes: set = set()

    def size(n) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in open_nodes:
            return limit + 1
        open_nodes.add(id(n))
        total = 1
        if isinstance(n, yaml.SequenceNode):
            children = n.value
        elif isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                break
        open_nodes.discard(id(n))
        sizes[id(n)] = total
        return total

    return size(node)


def read_yaml(text: str, source: str) -> Any:
    """The YAML document ``text`` as ML-Agents reads it, refusing duplicate keys and alias
    bombs; ``source`` names the file in the sentence of a ``UserError``."""
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, MAX_YAML_VALUES) > MAX_YAML_VALUES:
            raise UserError(f"{source} expands its aliases (*references to &anchors) to more than "
                            f"{MAX_YAML_VALUES:,} values; a trainer config needs a few hundred, "
                            "so write it without the repeated aliases.")
        return None if node is None else loader.construct_document(node)
    except YamlDuplicate as err:
        raise UserError(f"{source} {err}.") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "it is not valid YAML"
        raise UserError(f"{source} is malformed YAML{where}: {problem}.") from None
    finally:
        loader.dispose()


__all__ = ["MAX_YAML_VALUES", "YamlDuplicate", "number_text", "read_yaml"]
