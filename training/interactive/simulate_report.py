"""Rows, summaries, targets and the plot of the simulated-user benchmark
(:mod:`training.interactive.simulate`)."""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.runtime.atomic import atomic_path, atomic_write_text

KEY = ("dataset", "start", "selection", "mode", "k", "seed")
ARM = ("dataset", "start", "selection", "mode")
INTS = ("k", "seed", "n_corrected", "n_scored")
TEXT = ("dataset", "start", "selection", "mode", "config", "corrected")


def row_key(row: dict) -> tuple:
    return tuple(str(row[k]) for k in KEY)


def row_values(score: dict, start: dict, corrected, classes: Sequence[dict], seconds: float
               ) -> dict:
    """The measured part of a row: Dice after and before (same slices), what was corrected."""
    names = {c["index"]: c["name"] for c in classes}
    out = {"dice": score["dice"], "start_dice": start["dice"],
           "gain": score["dice"] - start["dice"], "n_corrected": len(corrected),
           "n_scored": len(score["scored"]), "corrected": ";".join(map(str, sorted(corrected)))}
    for c, d in score["per_class"].items():
        out[f"dice_{names.get(c, c)}"] = d
    out["seconds"] = round(seconds, 1)
    return out


def read_rows(path: str | Path) -> list[dict]:
    """Rows of an earlier (possibly cut-off) run; [] if there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                if v in ("", None):
                    continue
                row[k] = int(v) if k in INTS else v if k in TEXT else float(v)
            rows.append(row)
    return rows


def write_rows(path: str | Path, rows: Sequence[dict]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def curves(rows: Sequence[dict], key: str = "dice") -> dict[tuple, dict[int, dict]]:
    """{arm: {k: {mean, std, n, values}}} over seeds (k = 0: the starting model, all slices)."""
    acc: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["start"] == "reference" or key not in r:
            continue
        acc[tuple(r[a] for a in ARM)][int(r["k"])].append(float(r[key]))
    return {arm: {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v),
                      "values": v} for k, v in sorted(ks.items())} for arm, ks in acc.items()}


def paired_differences(rows: Sequence[dict]) -> dict[tuple, dict[int, dict]]:
    """{(dataset, selection, mode): {k: mean, std, n, wins}} of Dice(mae) - Dice(random) over
    rows that match in everything else."""
    by = {row_key(r): float(r["dice"]) for r in rows}
    acc: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["start"] != "mae":
            continue
        other = by.get(row_key({**r, "start": "random"}))
        if other is not None:
            acc[(r["dataset"], r["selection"], r["mode"])][int(r["k"])].append(
                float(r["dice"]) - other)
    return {arm: {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v),
                      "wins": int(sum(d > 0 for d in v))} for k, v in sorted(ks.items())}
            for arm, ks in acc.items()}


def slices_to_target(curve: dict[int, dict], target: float) -> int | None:
    """The fewest corrected slices whose mean Dice reaches ``target`` (0: the starting model
    already does; None: no ``k`` measured does)."""
    for k in sorted(curve):
        if curve[k]["mean"] >= target:
            return int(k)
    return None


def targets(rows: Sequence[dict], fixed: Sequence[float]) -> dict[str, dict]:
    """Per dataset: the full-supervision reference's Dice on the held-out volume (mean over
    seeds) and the fixed targets."""
    out: dict = {}
    for ds in sorted({r["dataset"] for r in rows}):
        ref = [float(r["dice"]) for r in rows if r["dataset"] == ds and r["start"] == "reference"]
        out[ds] = {"reference": float(np.mean(ref)) if ref else None,
                   "reference_std": float(np.std(ref)) if ref else None,
                   "fixed": [float(f) for f in fixed]}
    return out


def headline(rows: Sequence[dict], fixed: Sequence[float]) -> list[dict]:
    """Per arm: corrected slices needed to reach each target (``None``: more than measured)."""
    tg = targets(rows, fixed)
    out = []
    for arm, curve in sorted(curves(rows).items()):
        d = dict(zip(ARM, arm, strict=True))
        t = tg[d["dataset"]]
        d["to_reference"] = slices_to_target(curve, t["reference"]) \
            if t["reference"] is not None else None
        d["to_fixed"] = {f"{f:.2f}": slices_to_target(curve, f) for f in fixed}
        d["k_max"] = max(curve)
        out.append(d)
    return out


def write_outputs(out: Path, rows: Sequence[dict], cfg, meta: dict, seconds: float) -> None:
    if not rows:
        return
    meta = {**meta, "seconds_this_run": round(seconds, 1),
            "targets": targets(rows, cfg.fixed_targets),
            "slices_to_target": headline(rows, cfg.fixed_targets),
            "curves": {" / ".join(map(str, arm)): {str(k): {m: v[m] for m in ("mean", "std", "n")}
                                                  for k, v in c.items()}
                       for arm, c in sorted(curves(rows).items())}}
    atomic_write_text(out / "simulated_user.json", json.dumps(meta, indent=1) + "\n")
    atomic_write_text(out / "tables.md", markdown(rows, meta))
    plot(rows, out / "simulated_user.png", meta["targets"])


def plot(rows: Sequence[dict], path: Path, tg: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = curves(rows)
    dsets = sorted({a[0] for a in cs})
    modes = sorted({a[3] for a in cs})
    if not dsets:
        return
    fig, axes = plt.subplots(len(dsets), len(modes), figsize=(5 * len(modes), 3.6 * len(dsets)),
                             squeeze=False, sharey="row")
    colors = {"mae": "#D55E00", "random": "#0072B2"}
    for i, ds in enumerate(dsets):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            for arm, c in sorted(cs.items()):
                if arm[0] != ds or arm[3] != mode:
                    continue
                ks = sorted(c)
                ax.errorbar(ks, [c[k]["mean"] for k in ks], [c[k]["std"] for k in ks],
                            color=colors.get(arm[1]), capsize=3, marker="o",
                            ls="-" if arm[2] == "even" else "--", label=f"{arm[1]}, {arm[2]}")
            if tg[ds]["reference"] is not None:
                ax.axhline(tg[ds]["reference"], color="k", lw=0.8, ls=":",
                           label="full supervision")
            for f in tg[ds]["fixed"]:
                ax.axhline(f, color="grey", lw=0.6, ls="-.")
            ax.set_title(f"{ds}, {mode} mode")
            ax.set_xlabel("corrected slices k (0 = starting model)")
            ax.set_ylabel("Dice on uncorrected slices")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def text_summary(rows: Sequence[dict], meta: dict) -> str:
    """Mean +- std Dice per arm and k, then the corrected slices needed per target."""
    lines = []
    for arm, c in sorted(curves(rows).items()):
        lines.append(" ".join(arm).ljust(32) + "  ".join(
            f"k={k}: {v['mean']:.3f}±{v['std']:.3f}" for k, v in c.items()))
    for ds, t in meta["targets"].items():
        ref = f"{t['reference']:.3f}" if t["reference"] is not None else "n/a"
        lines.append(f"{ds}: full-supervision Dice {ref}, fixed targets {t['fixed']}")
    for h in meta["slices_to_target"]:
        def fmt(v, h=h):
            return f">{h['k_max']}" if v is None else str(v)
        lines.append(f"{' '.join(h[a] for a in ARM)}: slices to reference "
                     f"{fmt(h['to_reference'])}, " + ", ".join(
                         f"to {t} {fmt(v)}" for t, v in h["to_fixed"].items()))
    return "\n".join(lines)


def markdown(rows: Sequence[dict], meta: dict) -> str:
    """The results as Markdown: Dice vs k (mean ± std over seeds, n seeds) per arm, the gain
    over the starting model on the same slices, and the slices needed per target."""
    cs, gains = curves(rows), curves(rows, "gain")
    ks = sorted({k for c in cs.values() for k in c})
    out = ["| dataset | start | selection | mode | " + " | ".join(f"k={k}" for k in ks) + " |",
           "|" + "---|" * (4 + len(ks))]
    for arm, c in sorted(cs.items()):
        cells = [f"{c[k]['mean']:.3f} ± {c[k]['std']:.3f}" if k in c else "" for k in ks]
        out.append(f"| {' | '.join(arm)} | " + " | ".join(cells) + " |")
    n = sorted({v["n"] for c in cs.values() for v in c.values()})
    out += ["", f"Seeds per cell: {', '.join(map(str, n))}. k = 0: the starting model on "
            "every slice.", "", "Gain over the starting model on the same (uncorrected) "
            "slices, mean ± std:", "",
            "| dataset | start | selection | mode | " + " | ".join(
                f"k={k}" for k in ks if k) + " |", "|" + "---|" * (4 + len(ks) - 1)]
    for arm, c in sorted(gains.items()):
        cells = [f"{c[k]['mean']:+.3f} ± {c[k]['std']:.3f}" if k in c else "" for k in ks
                 if k]
        out.append(f"| {' | '.join(arm)} | " + " | ".join(cells) + " |")
    paired = paired_differences(rows)
    if paired:
        out += ["", "MAE start minus random start, paired (same volume, slices, mode and seed), "
                "mean ± std [MAE better in n of N pairs]:", "",
                "| dataset | selection | mode | " + " | ".join(f"k={k}" for k in ks) + " |",
                "|" + "---|" * (3 + len(ks))]
        for arm, c in sorted(paired.items()):
            cells = [f"{c[k]['mean']:+.3f} ± {c[k]['std']:.3f} [{c[k]['wins']}/{c[k]['n']}]"
                     if k in c else "" for k in ks]
            out.append(f"| {' | '.join(arm)} | " + " | ".join(cells) + " |")
    out += ["", "| dataset | full-supervision (reference) Dice on the held-out volume |",
            "|---|---|"]
    for ds, t in meta["targets"].items():
        if t["reference"] is not None:
            out.append(f"| {ds} | {t['reference']:.3f} ± {t['reference_std']:.3f} |")
    fixed = [f"{f:.2f}" for f in next(iter(meta["targets"].values()))["fixed"]]
    out += ["", "| dataset | start | selection | mode | slices to full-supervision Dice | "
            + " | ".join(f"slices to Dice {f}" for f in fixed) + " |",
            "|" + "---|" * (5 + len(fixed))]
    for h in meta["slices_to_target"]:
        def fmt(v, h=h):
            return f"> {h['k_max']}" if v is None else str(v)
        out.append(f"| {' | '.join(h[a] for a in ARM)} | {fmt(h['to_reference'])} | "
                   + " | ".join(fmt(h["to_fixed"][f]) for f in fixed) + " |")
    return "\n".join(out) + "\n"
