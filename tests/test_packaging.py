"""What an installed jppo gives a user: the ``jppo-learn`` console script, the shipped configs
inside a (non-editable) wheel so the quick start works from it, the tensorboard extra."""
import importlib
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from jppo.runs import shipped
from jppo.runs.settings import DEFAULT_CONFIG

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = pathlib.Path(__file__).resolve().parent.parent
# What a wheel is built from (copied, so the build leaves nothing in the checkout).
SOURCES = ("pyproject.toml", "setup.py", "README.md", "jppo", "configs")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_console_script_is_python_m_jppo_train():
    target = PYPROJECT["project"]["scripts"]["jppo-learn"]
    module, _, name = target.partition(":")
    entry = getattr(importlib.import_module(module), name)
    assert entry is importlib.import_module("jppo.train").main
    with pytest.raises(SystemExit) as done:
        entry(["--help"])
    assert done.value.code == 0


def test_tensorboard_extra_agrees_with_the_unity_pin():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert any(r.startswith("tensorboard") and "<2.21" in r for r in extras["tensorboard"])
    assert "protobuf==3.20.3" in extras["unity"]


def test_shipped_configs_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert DEFAULT_CONFIG == shipped.default() and DEFAULT_CONFIG.is_file()
    assert shipped.names() == sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
    assert shipped.locate("configs/CartPole.yaml") == shipped.folder() / "CartPole.yaml"
    assert shipped.locate("configs/Nope.yaml") == pathlib.Path("configs/Nope.yaml")
    # A user's own configs/ folder wins over the shipped one.
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "CartPole.yaml").write_text("behaviors: {}\n")
    assert shipped.locate("configs/CartPole.yaml") == pathlib.Path("configs/CartPole.yaml")


@pytest.mark.slow
def test_wheel_ships_the_configs_and_the_script(tmp_path):
    """A built wheel, installed (not editable) into a folder of its own, holds every config of
    configs/ as jppo/configs, and its jppo-learn script starts with them from any folder."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation,
                    str(source), "-w", str(tmp_path / "dist")], check=True, cwd=tmp_path,
                   timeout=300)
    (wheel,) = (tmp_path / "dist").glob("jppo-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        scripts = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for config in (ROOT / "configs").glob("*.yaml"):
        assert f"jppo/configs/{config.name}" in names
    assert "jppo-learn = jppo.train:main" in scripts
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = tmp_path / "elsewhere"
    where.mkdir()
    probe = subprocess.run(
        [sys.executable, "-c", "import jppo; from jppo.runs.settings import DEFAULT_CONFIG; "
         "print(jppo.__file__); print(DEFAULT_CONFIG)"],
        capture_output=True, text=True, cwd=where, env=env, timeout=120, check=True)
    package, config = probe.stdout.split()
    assert pathlib.Path(package).is_relative_to(site)
    assert pathlib.Path(config) == site / "jppo" / "configs" / "3DBall.yaml"
    helped = subprocess.run([str(site / "bin" / "jppo-learn"), "--help"], capture_output=True,
                            text=True, cwd=where, env=env, timeout=120)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: jppo-learn")
    # The README's path, from a folder with no configs/: the shipped file; a mistake in it is
    # reported for that file (one sentence, exit 2), proving the script read it.
    bad = subprocess.run([str(site / "bin" / "jppo-learn"), "configs/CartPole.yaml", "--set",
                          "gamma=2"], capture_output=True, text=True, cwd=where, env=env,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("jppo: error: gamma = 2"), bad.stderr
