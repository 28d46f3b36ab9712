"""The package's layers and their dependency rules (jppo/__init__.py and each layer's
__init__.py say the same in words): every import in jppo/**/*.py, at module level or inside a
function, is checked against the table, and the module graph has no circle."""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jppo"
# Standard library only; every layer but core/envs may use them. interrupts (Ctrl-C and SIGTERM
# as a flag the loops read at safe points) sits here because both drivers, the CLI and the
# host loop's waits for Unity (unity_env, not a driver) must read the same flag.
BASE = {"errors", "files", "version", "interrupts"}

# layer -> the layers it may import (its own modules are always allowed).
RULES = {
    "errors": set(), "files": set(), "version": set(), "interrupts": set(),
    "core": set(), "envs": set(),
    "distributed": {"errors"},
    "onnx": {"core"} | BASE,
    "reference": {"core"},
    "standin": {"envs"},
    "runs": {"core", "distributed", "onnx"} | BASE,
    "jax_loop": {"core", "envs", "distributed"} | BASE,
    "host_loop": {"core", "distributed"} | BASE,
    "render": set(),
    # The CLIs' Python face (fit, evaluate_run): composes the layers below, never a CLI.
    "api": {"core", "envs", "distributed", "jax_loop", "runs", "render"} | BASE,
    # The CLIs may import anything below them; nothing imports them.
    "train": {"core", "envs", "distributed", "onnx", "runs", "jax_loop", "host_loop"} | BASE,
    "export": {"core", "onnx", "runs"} | BASE,
    "evaluate": {"api"} | BASE,
    "__init__": {"core", "envs", "jax_loop", "api", "version"},
}
# Within a loop, only its driver reaches the run IO (the host loop's driver with the parts it
# hands run IO to: a behavior's Learner, the environment parameters' Lessons, and Stopping).
DRIVER_ONLY = {("jax_loop", "runs"): {"driver"},
               ("host_loop", "runs"): {"driver", "learner", "lessons", "stopping"}}
CLIS = {"train", "export", "evaluate"}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str:
    """``jppo.core.update`` -> core, ``jppo.train`` -> train, ``jppo`` -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: pathlib.Path) -> list[tuple[int, str]]:
    """Every jppo module ``path`` imports, with its line: ``import jppo.x``, ``from jppo.x
    import y`` (y may itself be a module), relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "jppo"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] +
                                ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "jppo":
                continue
            for alias in node.names:  # "from jppo.runs import checkpoint": the module itself
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if _is_module(candidate) else base))
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(root: pathlib.Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        me = module_name(path)
        mine = layer_of(me)
        for line, target in imports_of(path):
            theirs = layer_of(target)
            where = f"{path.relative_to(root.parent)}:{line} imports {target}"
            if theirs in CLIS:
                found.append(f"{where}: nothing imports a CLI")
            elif theirs == mine or theirs in RULES.get(mine, set()):
                continue
            elif (mine, theirs) in DRIVER_ONLY:
                if me.split(".")[-1] not in DRIVER_ONLY[mine, theirs]:
                    found.append(f"{where}: only {mine}.driver imports {theirs}")
            else:
                found.append(f"{where}: {mine} may import only {sorted(RULES.get(mine, ()))}")
    return found


def module_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[module_name(path)] = {t for _, t in imports_of(path) if t != module_name(path)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # A package's __init__ imported on the way to its submodule is not a dependency of
            # the importer's own making; only real module edges count.
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_import_follows_the_layer_rules():
    assert violations() == []


def test_the_module_graph_has_no_circle():
    assert find_cycle(module_graph()) is None


def test_every_module_belongs_to_a_known_layer():
    layers = {layer_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert layers <= set(RULES), layers - set(RULES)


@pytest.mark.parametrize("module, line, layer", [
    ("core/update.py", "from jppo.runs import checkpoint", "core"),
    ("core/gae.py", "import jppo.envs", "core"),
    ("runs/report.py", "from jppo.jax_loop import trainer", "runs"),
    ("host_loop/acting.py", "from jppo.runs.summaries import TAGS", "host_loop"),
    ("jax_loop/rollout.py", "from jppo.host_loop import vec_env", "jax_loop"),
    ("distributed.py", "from jppo.core import update", "distributed"),
    ("envs/cartpole.py", "from jppo.errors import UserError", "envs"),
    ("onnx/graph.py", "from jppo import train", "onnx"),
])
def test_a_forbidden_import_is_caught(tmp_path, module, line, layer):
    """The rules have teeth: a copy of the package with one forbidden import fails, and the
    message names the file and the rule (the import is inside a function, where it counts too)."""
    import shutil

    copy = tmp_path / "jppo"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n\ndef _smuggled():\n    {line}\n")
    found = [v for v in _violations_in(copy) if v.startswith(f"jppo/{module}:")]
    assert found and all(layer in v or "CLI" in v for v in found), found


def _violations_in(root: pathlib.Path) -> list[str]:
    global PACKAGE
    saved, PACKAGE = PACKAGE, root
    try:
        return violations(root)
    finally:
        PACKAGE = saved
