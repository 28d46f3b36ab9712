"""Renders the JAX-against-torch results as a markdown table and a bar chart of the speedups.

Reads results/{gae,update,e2e}_vs_torch_<label>.json (one file per benchmark and device label,
so a GPU machine's rows stand apart from the CPU's) and writes results/vs_torch.md and
results/vs_torch.png. ``--quick`` reads the ``*-quick`` smoke-run files instead and writes
vs_torch_quick.md / .png.

    python benchmarks/report.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
KINDS = {
    "gae_vs_torch": ("GAE", "bench_gae.py"),
    "update_vs_torch": ("One PPO update", "bench_update_vs_torch.py"),
    "e2e_vs_torch": ("End-to-end training", "bench_e2e_vs_torch.py"),
}


def load(quick: bool) -> list[dict]:
    docs = []
    for kind in KINDS:
        for path in sorted(RESULTS.glob(f"{kind}_*.json")):
            doc = json.loads(path.read_text())
            if doc.get("quick", False) == quick:
                docs.append(doc)
    return docs


def fmt(x: float) -> str:
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}" if x < 10 else f"{x:.1f}"


def machines_table(docs: list[dict]) -> list[str]:
    lines = ["| device label | CPU (cores) | GPU | JAX (device) | torch (default threads) | "
             "XLA_FLAGS | load average at the end | date |", "|---" * 8 + "|"]
    seen = set()
    for doc in docs:
        m = doc["machine"]
        key = (doc["device_label"], m["cpu"], m.get("gpu"), m["jax"], m.get("torch"))
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"| {doc['device_label']} | {m['cpu']} ({m['cpu_count']}) | "
                     f"{m.get('gpu') or '-'} | {m['jax']} ({doc['jax_device_kind']}) | "
                     f"{m.get('torch', '-')} ({doc.get('torch_default_threads')}) | "
                     f"{m['env'].get('XLA_FLAGS', '-')} | "
                     f"{', '.join(map(str, doc.get('load_average_1_5_15', [])))} | "
                     f"{m['date'][:10]} |")
    return lines


def rows_table(docs: list[dict]) -> list[str]:
    lines = ["| device | case | unit | jppo | torch | torch variant | speedup | goal |",
             "|---" * 8 + "|"]
    for doc in docs:
        for r in doc["rows"]:
            goal = "" if r["goal"] is None else \
                f"{r['goal']:g}x: {'met' if r['goal_met'] else '**not met**'}"
            variant = r["torch_variant"]
            if "torch_env_step_share" in r:
                variant += f" (env {100 * r['torch_env_step_share']:.0f}% of its time)"
            lines.append(f"| {doc['device_label']} | {r['case']} | {r['unit']} | {fmt(r['jppo'])} "
                         f"| {fmt(r['torch'])} | {variant} | **{r['speedup']:.1f}x** | {goal} |")
    return lines


def compile_lines(docs: list[dict]) -> list[str]:
    """jppo's compile times, kept out of every figure above."""
    out = []
    for doc in docs:
        if doc["kind"] == "gae_vs_torch":
            out.append(f"- {doc['device_label']}, GAE: {doc['jppo']['compile_s']:.2f} s")
        for name, case in doc.get("cases", {}).items():
            extra = ""
            if "env_compile_s" in case.get("torch", {}):
                extra = f" (the torch loop's host env jit: {case['torch']['env_compile_s']:.2f} s)"
            out.append(f"- {doc['device_label']}, {KINDS[doc['kind']][0].lower()}, {name}: "
                       f"{case['jppo']['compile_s']:.2f} s{extra}")
    return out


def chart(docs: list[dict], path: pathlib.Path):
    bars = [(f"[{doc['device_label']}] {KINDS[doc['kind']][0]}: {r['case']}\nvs {r['torch_variant']}",
             r["speedup"], r["goal"])
            for doc in docs for r in doc["rows"] if r["unit"] != "ms per minibatch"]
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(bars) + 1.5))
    y = range(len(bars))
    ax.barh(list(y), [b[1] for b in bars], color="tab:blue")
    for i, (_, speedup, goal) in enumerate(bars):
        ax.text(speedup, i, f" {speedup:.1f}x", va="center", fontsize=8)
        if goal is not None:
            ax.plot([goal, goal], [i - 0.4, i + 0.4], color="tab:red", lw=2,
                    label="goal" if i == next(j for j, b in enumerate(bars) if b[2]) else None)
    ax.axvline(1.0, color="gray", lw=1, ls="--")
    ax.set_xscale("log")
    ax.set_yticks(list(y), [b[0] for b in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup of jppo over torch (log scale; > 1: jppo faster)")
    if any(b[2] for b in bars):
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="report the --quick smoke runs")
    args = parser.parse_args()
    docs = load(args.quick)
    if not docs:
        raise SystemExit(f"no results in {RESULTS}; run the bench_*_vs_torch.py scripts first.")
    stem = "vs_torch_quick" if args.quick else "vs_torch"
    lines = ["# jppo against PyTorch", "",
             "Generated by `python benchmarks/report.py` from `benchmarks/results/*_vs_torch_*.json`"
             " (see `benchmarks/README.md` for what each benchmark measures). Speedup: torch's "
             "time over jppo's (or jppo's steps/s over torch's); above 1, jppo is faster. "
             "Medians over repeats; compile times are not in them." +
             (" **Smoke run (`--quick`): tiny sizes, not meaningful.**" if args.quick else ""),
             "", "## Machines", "", *machines_table(docs), ""]
    for kind, (title, script) in KINDS.items():
        of_kind = [d for d in docs if d["kind"] == kind]
        if of_kind:
            lines += [f"## {title} (`{script}`)", "", *rows_table(of_kind), ""]
    lines += ["## jppo compile times", "", *compile_lines(docs), "",
              f"![speedups]({stem}.png)", ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))
    chart(docs, RESULTS / f"{stem}.png")
    print(f"wrote {RESULTS / (stem + '.md')} and {RESULTS / (stem + '.png')}")


if __name__ == "__main__":
    main()
