"""Everything is in pyproject.toml but the one thing it cannot say: the repository's configs/
(the README's paths: python -m jppo.train configs/CartPole.yaml) ships inside the package as
jppo/configs, so a wheel's quick start finds them (jppo.runs.shipped)."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["jppo", "jppo.*"]) + ["jppo.configs"],
      package_dir={"jppo.configs": "configs"},
      package_data={"jppo.configs": ["*.yaml"]})
