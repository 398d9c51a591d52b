"""The README's paper-fidelity tables, from a finished `sanity reproduce paper_mnist` (or `revisited`) run.

    python scripts/paper_table.py results/reproduce/paper_mnist/latest

For each job (model x test): every method's value of the verdict's metric after randomization (spearman_abs for
the paper's tests; eMPRT's entropy_rise; with verdict.metric=all the deciding metric, named in the cell when it
is another), its null, the verdict, the models' accuracies and how long the job took
(from manifest.json), as Markdown.
Nothing here computes a number: it only reads what the run wrote.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

METHOD_ORDER = ["gradient", "smoothgrad_gradient", "vargrad", "gradient_x_input", "integrated_gradients",
                "smoothgrad_integrated_gradients", "guided_backprop", "gradcam", "guided_gradcam", "sobel", "random"]


def job_rows(job_dir: Path) -> dict:
    verdict = pd.read_csv(job_dir / "verdict.csv").set_index("method")
    manifest = json.loads((job_dir / "manifest.json").read_text())
    models = pd.read_csv(job_dir / "models.csv", dtype={"labels": str})
    cells = {}
    for method in METHOD_ORDER:
        if method not in verdict.index:
            continue
        row = verdict.loc[method]
        label = {"reference": "ref", "INCONCLUSIVE": "INC"}.get(row["verdict"], row["verdict"])
        deciding = f" ({row['metric']})" if row["metric"] != verdict["metric"].iloc[0] else ""
        cells[method] = f"{row['similarity']:.2f} / {row['null_similarity']:.2f} {label}{deciding}"
    config = manifest["config"]
    test = config["test"]["name"] + (" bottom_up" if config["test"].get("order") == "bottom_up"
                                     and config["test"]["name"] == "cascading" else "")
    metric = verdict["metric"].iloc[0]
    info = "; ".join(
        f"{m.labels}: train {m.train_accuracy:.3f}, test {m.test_accuracy:.3f}"
        + (f", {m.epochs_run} epochs, {m.train_seconds:.0f} s" if pd.notna(m.train_seconds) else "")
        for m in models.itertuples())
    return {"job": f"{config['model']['name']} {test} ({metric})", "n": len(manifest["explained_images"]),
            "seconds": manifest["wall_seconds"], "models": info, **cells}


def main(run_dir: str) -> None:
    root = Path(run_dir).resolve()
    jobs = sorted(p.parent for p in root.glob("*/verdict.csv"))
    if not jobs:
        sys.exit(f"no finished jobs (verdict.csv) under {root}")
    rows = [job_rows(job) for job in jobs]
    methods = [m for m in METHOD_ORDER if any(m in row for row in rows)]
    print(f"<!-- {root} -->")
    print("| job | " + " | ".join(methods) + " | images | run time |")
    print("| --- | " + " | ".join("---" for _ in methods) + " | --- | --- |")
    for row in rows:
        print(f"| {row['job']} | " + " | ".join(row.get(m, "") for m in methods)
              + f" | {row['n']} | {row['seconds'] / 60:.1f} min |")
    print()
    for row in rows:
        print(f"- {row['job']}: {row['models']}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
