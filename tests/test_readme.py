"""The README's promises: its example runs, and .ci/run runs its test command."""
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_exactly_two_commands():
    first = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(first) == 2
    assert first[0].endswith("python -m jppo.train") and "pip install" in first[0]
    assert "pytest" in first[1] and "pip install" in first[1]
    assert README.index("```bash") < README.index("jppo** is")


def test_readme_python_example_runs():
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    out = subprocess.run(["python", "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "'policy_loss'" in out.stdout and "'approx_kl'" in out.stdout


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    out = subprocess.run(["awk", '/^```/{block++; next} block==1 && /pytest/ {print; exit}', "README.md"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == README.split("```bash\n", 1)[1].splitlines()[1]
    assert "README.md" in script and 'bash -c' in script


def test_readme_own_environment_example_learns_the_best_return():
    """The second Python example: a user-written environment trained by jppo.make_train in
    about 15 lines reaches the corridor's best return (0.96) on every seed."""
    code = re.findall(r"```python\n(.*?)```", README, re.S)[1]
    assert "make_train" in code and len(code.strip().splitlines()) <= 20
    out = subprocess.run(["python", "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    values = [float(v) for v in re.findall(r"-?\d+\.\d+", out.stdout.split(":", 1)[1])]
    assert len(values) == 4 and all(v > 0.93 for v in values), out.stdout
