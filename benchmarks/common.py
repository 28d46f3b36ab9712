"""What the JAX-against-torch benchmarks share: arguments, torch threads, timing, result rows.

Every ``*_vs_torch`` script writes ``results/<kind>_<device-label>.json`` with ``rows``, one per
comparison, in one schema that ``report.py`` reads::

    {"case", "unit", "jppo": value, "torch": value, "torch_variant", "torch_threads",
     "higher_is_better", "speedup" (jppo over torch, > 1: jppo faster), "goal" (or null)}
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from typing import Callable

import jax
import torch

import machine

# torch's own choice, read before any script changes it (the physical core count, or
# OMP_NUM_THREADS when that is set).
TORCH_DEFAULT_THREADS = torch.get_num_threads()


def parser(doc: str, repeats: int, threads: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(doc.splitlines()[1:]))
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, a smoke run of a few seconds; results are not meaningful")
    p.add_argument("--repeats", type=int, default=repeats, help="timed repeats; medians reported")
    p.add_argument("--torch-threads", default=threads,
                   help="comma-separated torch thread counts, each its own row; 'default' is "
                        f"torch's own choice on this machine ({TORCH_DEFAULT_THREADS})")
    p.add_argument("--device-label", default=None,
                   help="names this machine's rows and result file (default: JAX's backend, "
                        "e.g. 'cpu' or 'gpu'); use e.g. 'h100' for a GPU machine")
    return p


def device_label(args) -> str:
    label = args.device_label or jax.default_backend()
    if args.quick:
        label += "-quick"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label)


def thread_counts(spec: str) -> list[int]:
    """``"1,default"`` -> ``[1, TORCH_DEFAULT_THREADS]`` (duplicates dropped, order kept)."""
    counts = []
    for item in spec.split(","):
        item = item.strip()
        n = TORCH_DEFAULT_THREADS if item == "default" else int(item)
        if n not in counts:
            counts.append(n)
    return counts


def thread_name(n: int) -> str:
    return f"{n} thread{'s' if n > 1 else ''}" + (" (torch default)" if n == TORCH_DEFAULT_THREADS
                                                  else "")


def seconds(fn: Callable[[], object], repeats: int, inner: int = 1) -> dict:
    """Median and min over ``repeats`` of the mean wall time of ``inner`` calls of ``fn``.
    ``fn`` must block until its work is done (``jax.block_until_ready`` for JAX)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats,
            "calls_per_repeat": inner}


def calls_for(fn: Callable[[], object], target_s: float) -> int:
    """How many calls of ``fn`` (already warmed up) take about ``target_s`` seconds."""
    start = time.perf_counter()
    fn()
    return max(1, round(target_s / max(time.perf_counter() - start, 1e-9)))


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """``(fn(), seconds)`` for one call."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def row(case: str, unit: str, jppo: float, torch_value: float, torch_variant: str,
        torch_threads: int | None, higher_is_better: bool, goal: float | None = None,
        **extra) -> dict:
    speedup = jppo / torch_value if higher_is_better else torch_value / jppo
    return {"case": case, "unit": unit, "jppo": jppo, "torch": torch_value,
            "torch_variant": torch_variant, "torch_threads": torch_threads,
            "higher_is_better": higher_is_better, "speedup": speedup, "goal": goal,
            "goal_met": None if goal is None else speedup >= goal, **extra}


def write(kind: str, args, payload: dict, rows: list[dict]):
    """``results/<kind>_<label>.json`` with the machine, the settings and the rows."""
    label = device_label(args)
    payload = {"kind": kind, "device_label": label, "quick": args.quick,
               "jax_device": str(jax.devices()[0]), "jax_device_kind": jax.devices()[0].device_kind,
               "torch_default_threads": TORCH_DEFAULT_THREADS,
               # Other jobs may share the machine; the load average says how much of it we had.
               "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
               **payload, "rows": rows}
    torch.set_num_threads(TORCH_DEFAULT_THREADS)  # machine.describe records the current count
    path = machine.write(f"{kind}_{label}", payload)
    for r in rows:
        print(f"  {r['case']:<34} {r['unit']:<16} jppo {r['jppo']:>12.4g}  "
              f"torch {r['torch']:>12.4g} [{r['torch_variant']}]  speedup {r['speedup']:.2f}x"
              + ("" if r["goal"] is None else f"  (goal {r['goal']:g}x: "
                 f"{'met' if r['goal_met'] else 'NOT met'})"))
    print(f"wrote {path}")
    return path
