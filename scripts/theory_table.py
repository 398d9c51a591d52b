"""The README's Sec. 5 table, from a finished `sanity reproduce theory` run.

    python scripts/theory_table.py results/reproduce/theory/latest [METRIC]

For each job (model, data, weights) and view (the map; |map - median(map)|): every method's similarity with the
Sobel edge map of its input (METRIC, default spearman_abs) for the model as given (trained or random weights, stage
0), then with every block randomized (the last stage), and the null (one image's map against another image's edge
map), as Markdown; then the models' accuracies. Nothing here computes a number: it only reads edges.csv and
models.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

METHOD_ORDER = ["gradient", "smoothgrad_gradient", "guided_backprop", "integrated_gradients", "gradient_x_input",
                "sobel", "random"]
VIEWS = {"map": "map", "departure": "\\|map - median\\|"}


def job_rows(job_dir: Path, metric: str) -> list[list[str]]:
    edges = pd.read_csv(job_dir / "edges.csv")
    edges = edges[(edges["edge"] == "sobel") & (edges["metric"] == metric)]
    last = edges["stage"].max()
    rows = []
    for view, label in VIEWS.items():
        chosen = edges[edges["view"] == view].set_index(["method", "stage"])
        cells = []
        for method in METHOD_ORDER:
            if (method, 0) not in chosen.index:
                cells.append("")
                continue
            before, after = chosen.loc[(method, 0)], chosen.loc[(method, last)]
            cells.append(f"{before['mean']:.2f} / {after['mean']:.2f} ({before['null_similarity']:.2f})")
        rows.append([job_dir.name, label, *cells])
    return rows


def main(argv: list[str]) -> int:
    run = Path(argv[0]).resolve()
    metric = argv[1] if len(argv) > 1 else "spearman_abs"
    jobs = sorted(p for p in run.iterdir() if (p / "edges.csv").exists())
    print(f"| job | view ({metric} with Sobel) | " + " | ".join(METHOD_ORDER) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in METHOD_ORDER) + " |")
    for job in jobs:
        for row in job_rows(job, metric):
            print("| " + " | ".join(row) + " |")
    print()
    for job in jobs:
        for model in pd.read_csv(job / "models.csv").itertuples():
            if pd.notna(getattr(model, "test_accuracy", float("nan"))):
                print(f"- {job.name}: train accuracy {model.train_accuracy:.3f}, test {model.test_accuracy:.3f}, "
                      f"{model.epochs_run} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
