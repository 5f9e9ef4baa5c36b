"""The study's outputs: the rows as CSV, mean ± std and paired tests per fraction (JSON and a
Markdown table), and the plot."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.runtime.atomic import atomic_path, atomic_write_text

KEY = "mean_dice"


def summarize(rows: Sequence[dict], key: str = KEY, dataset: str | None = None) -> dict:
    """{arm: [(percent, mean, std, n), ...]} over seeds (one dataset, or all rows)."""
    rows = [r for r in rows if dataset is None or r.get("dataset", dataset) == dataset]
    arm_of = lambda r: r.get("arm", r.get("init"))  # noqa: E731
    out: dict = {}
    for arm in sorted({arm_of(r) for r in rows}):
        pts = []
        for pct in sorted({r["percent"] for r in rows}):
            v = [r[key] for r in rows if arm_of(r) == arm and r["percent"] == pct]
            if v:
                pts.append((pct, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1
                            else 0.0, len(v)))
        out[arm] = pts
    return out


def paired_tests(rows: Sequence[dict], key: str = KEY) -> list[dict]:
    """For every dataset, fraction and arm other than random: the per-seed differences to
    random init (same seed = same label subset, fine-tuning order and augmentation), their
    mean ± std, wins, a two-sided paired t-test and a Wilcoxon signed-rank test."""
    from scipy import stats

    out = []
    for ds in sorted({r["dataset"] for r in rows}):
        sub = [r for r in rows if r["dataset"] == ds]
        rnd = {(r["percent"], r["seed"]): r[key] for r in sub if r["arm"] == "random"}
        for arm in sorted({r["arm"] for r in sub} - {"random"}):
            for pct in sorted({r["percent"] for r in sub}):
                pairs = [(r[key], rnd[(pct, r["seed"])]) for r in sub
                         if r["arm"] == arm and r["percent"] == pct and (pct, r["seed"]) in rnd]
                if not pairs:
                    continue
                a, b = np.array(pairs).T
                d = a - b
                res = {"dataset": ds, "arm": arm, "percent": pct, "n": len(d),
                       "mean_arm": float(a.mean()), "std_arm": _std(a),
                       "mean_random": float(b.mean()), "std_random": _std(b),
                       "mean_diff": float(d.mean()), "std_diff": _std(d),
                       "wins": int((d > 0).sum()), "t_p": None, "wilcoxon_p": None}
                if len(d) >= 2 and np.any(d != d[0]):
                    res["t_p"] = float(stats.ttest_rel(a, b).pvalue)
                if len(d) >= 2 and np.any(d != 0):
                    res["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
                out.append(res)
    return out


def _std(v) -> float:
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def markdown_table(tests: Sequence[dict]) -> str:
    """One line per (dataset, arm, fraction): arm vs random, mean ± std, Δ, wins, p."""
    fmt = lambda p: "–" if p is None else f"{p:.3f}"  # noqa: E731
    lines = ["| data | arm | labelled | arm Dice | random Dice | Δ (arm − random) | wins | "
             "paired t p | Wilcoxon p |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for t in tests:
        lines.append(f"| {t['dataset']} | {t['arm']} | {t['percent']:g} % | "
                     f"{t['mean_arm']:.3f} ± {t['std_arm']:.3f} | "
                     f"{t['mean_random']:.3f} ± {t['std_random']:.3f} | "
                     f"{t['mean_diff']:+.3f} ± {t['std_diff']:.3f} | {t['wins']}/{t['n']} | "
                     f"{fmt(t['t_p'])} | {fmt(t['wilcoxon_p'])} |")
    return "\n".join(lines) + "\n"


def write_table(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) and k not in ("fraction", "percent",
                                                                        "layer_decay") else v)
                    for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


STYLE = {"mae": ("#D55E00", "o", "MAE init (default recipe)"),
         "random": ("#0072B2", "s", "random init"),
         "paper": ("#009E73", "^", "MAE init, paper recipe (enc+dec)"),
         "mae_fast": ("#CC79A7", "D", "MAE init, fast pretraining")}


def plot(rows: Sequence[dict], path, key: str = KEY) -> Path:
    """Dice vs. label fraction (log axis), one panel per dataset, mean ± std over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r.get("dataset", "phantoms") for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        for arm, pts in summarize(rows, key, ds).items():
            color, marker, label = STYLE.get(arm, ("gray", "x", f"MAE init, {arm}"))
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                        color=color, marker=marker, capsize=3, label=label)
        pcts = sorted({r["percent"] for r in rows if r.get("dataset", ds) == ds})
        ax.set_xscale("log")
        ax.set_xticks(pcts)
        ax.set_xticklabels([f"{p:g}" for p in pcts])
        ax.set_xlabel("labelled training data (%)")
        ax.set_ylabel("test Dice (mean over foreground classes)")
        n = len({r["seed"] for r in rows if r.get("dataset", ds) == ds})
        ax.set_title(f"{ds} ({n} seed{'s' if n > 1 else ''}, mean ± std)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def write_outputs(rows: list[dict], out: Path, meta: dict) -> dict:
    """label_efficiency.{csv,json,png} and label_efficiency_table.md in ``out``."""
    out = Path(out)
    if not rows:
        raise ValueError("no rows to report")
    rows = sorted(rows, key=lambda r: (r["dataset"], r["arm"], r["percent"], r["seed"]))
    write_table(out / "label_efficiency.csv", rows)
    tests = paired_tests(rows)
    meta = dict(meta, paired_tests=tests,
                summary={ds: summarize(rows, KEY, ds) for ds in {r["dataset"] for r in rows}},
                test_note="paired over seeds (same label subset, order and augmentation per "
                          "seed in both arms); two-sided paired t-test (scipy.stats.ttest_rel) "
                          "and Wilcoxon signed-rank (scipy.stats.wilcoxon, exact; with 5 seeds "
                          "its smallest possible p is 0.0625)")
    atomic_write_text(out / "label_efficiency.json", json.dumps(meta, indent=2, default=str)
                      + "\n")
    atomic_write_text(out / "label_efficiency_table.md", markdown_table(tests))
    plot(rows, out / "label_efficiency.png")
    return meta
