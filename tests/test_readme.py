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
