"""Deprecated: ``python -m jppo.envs.unity_standin`` is now ``python -m jppo.standin``; this
forwarding module goes in the next release. It runs the stand-in by module name, without
importing it here, so the environments layer stays free of the test double."""
import runpy
import sys

if __name__ == "__main__":
    print("jppo.envs.unity_standin is deprecated: run python -m jppo.standin", file=sys.stderr)
    runpy.run_module("jppo.standin", run_name="__main__", alter_sys=True)
