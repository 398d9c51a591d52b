"""README's comparison with the released notebooks, and the recipe ablation table, from a finished suite run.

    python scripts/notebook_table.py results/reproduce/notebooks/latest          # ours beside the notebooks
    python scripts/notebook_table.py results/reproduce/recipe_ablation/latest    # one choice switched per job

The notebooks' numbers are their saved outputs (adebayoj/sanity_checks_saliency, notebooks/): the mean Spearman
rank correlation of |m| / max |m| maps between the trained and the randomized model, over the first 10 MNIST test
images (cascading), and per image for the first 5 (independent, fc1: the only rows the notebook prints).
Nothing here computes a similarity: it reads what the runs wrote (metrics.csv, summary.csv, verdict.csv).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TOLERANCE = 0.1  # issue 24: every stage within 0.1 of the notebook for the four methods below
JUDGED = ("gradient", "smoothgrad_gradient", "guided_backprop", "gradcam")


@dataclass(frozen=True)
class Notebook:
    source: str
    stages: tuple[str, ...]               # sanity's block names, in the notebook's column order
    values: dict[str, tuple[float, ...]]  # sanity's method name -> the notebook's value per stage
    images: tuple[int, ...] | None = None  # the test images its values average (None: every explained image)


NOTEBOOKS = {
    "cnn_cascading": Notebook(
        "notebooks/cnn_mnist_cascading_randomization.ipynb, cell 36 (softmax_linear, fc1, hidden2, hidden1)",
        ("logits", "fc1", "conv2", "conv1"), {
            "gradient": (0.601145, 0.396089, 0.105509, 0.082446),
            "smoothgrad_gradient": (0.536286, 0.329503, 0.180300, 0.212522),
            "guided_backprop": (0.887599, 0.773429, 0.628115, 0.444149),
            "gradcam": (0.556216, 0.343793, 0.289925, 0.298528),
            "guided_gradcam": (0.555383, 0.358696, 0.329324, 0.282110),
            "integrated_gradients": (0.993986, 0.993249, 0.992580, 0.991981),
            "gradient_x_input": (0.993185, 0.992998, 0.992692, 0.991554),
            "smoothgrad_integrated_gradients": (0.576819, 0.429279, 0.379435, 0.360800)}),
    "mlp_cascading": Notebook(
        "notebooks/mlp_mnist_cascading_randomization.ipynb, cell 26 (logits, hidden3, hidden2, hidden1)",
        ("logits", "fc3", "fc2", "fc1"), {
            "gradient": (0.234092, 0.098783, 0.015073, 0.019616),
            "smoothgrad_gradient": (0.254958, 0.123680, 0.007250, 0.024878),
            "guided_backprop": (0.902764, 0.823124, 0.438692, 0.044256),
            "integrated_gradients": (0.993730, 0.992703, 0.991902, 0.992729),
            "gradient_x_input": (0.993601, 0.992686, 0.991811, 0.992701),
            "smoothgrad_integrated_gradients": (0.406806, 0.367674, 0.334647, 0.345138)}),
    # cell 23 prints df.head(): fc1 randomized alone, images 0-4; the value is their mean
    "cnn_independent": Notebook(
        "notebooks/cnn_mnist_independent_randomization.ipynb, cell 23 (fc1, images 0-4)", ("fc1",), {
            "gradient": (float(np.mean([0.396529, 0.316282, 0.557049, 0.308705, 0.338469])),),
            "smoothgrad_gradient": (float(np.mean([0.332738, 0.348774, 0.301915, 0.372689, 0.300603])),),
            "guided_backprop": (float(np.mean([0.797228, 0.824709, 0.783197, 0.840884, 0.724566])),),
            "gradcam": (float(np.mean([0.639247, 0.529764, 0.721287, 0.127315, -0.210426])),),
            "guided_gradcam": (float(np.mean([0.700422, 0.508542, 0.709668, 0.160692, -0.162057])),),
            "integrated_gradients": (float(np.mean([0.995700, 0.990262, 0.998864, 0.983425, 0.994024])),),
            "gradient_x_input": (float(np.mean([0.994820, 0.990695, 0.998645, 0.984119, 0.994016])),),
            "smoothgrad_integrated_gradients": (float(np.mean([0.352860, 0.503661, 0.345525, 0.582583,
                                                                 0.358267])),)},
        images=(0, 1, 2, 3, 4)),
}


def ours(job_dir: Path, notebook: Notebook, metric: str = "spearman_abs") -> dict[str, list[float]]:
    """Our mean similarity per method at each of the notebook's stages, over the notebook's images."""
    table = pd.read_csv(job_dir / "metrics.csv")
    table = table[(table["metric"] == metric) & (table["stage"] > 0)]
    if notebook.images is not None:
        table = table[table["image"].isin(notebook.images)]
    means = table.groupby(["method", "block"])["value"].mean()
    return {method: [float(means.get((method, stage), np.nan)) for stage in notebook.stages]
            for method in notebook.values if method in set(table["method"])}


def comparison(job: str, job_dir: Path) -> list[str]:
    notebook = NOTEBOOKS[job]
    found = ours(job_dir, notebook)
    lines = [f"**{job}** (notebook: {notebook.source})", "",
             "| method | " + " | ".join(notebook.stages) + " | largest difference |",
             "| --- | " + " | ".join("---" for _ in notebook.stages) + " | --- |"]
    for method, theirs in notebook.values.items():
        if method not in found:
            continue
        gap = max(abs(a - b) for a, b in zip(found[method], theirs))
        flag = "" if method not in JUDGED else (" (within 0.1)" if gap <= TOLERANCE else " (**over 0.1**)")
        lines.append(f"| {method} | " + " | ".join(f"{a:.2f} / {b:.2f}" for a, b in zip(found[method], theirs))
                     + f" | {gap:.2f}{flag} |")
    return lines + [""]


def ablation_row(job: str, job_dir: Path, methods=("gradient", "guided_backprop")) -> str:
    summary = pd.read_csv(job_dir / "summary.csv")
    summary = summary[(summary["metric"] == "spearman_abs") & (summary["stage"] > 0)].sort_values("stage")
    null = pd.read_csv(job_dir / "null.csv")
    null = null[(null["metric"] == "spearman_abs") & ~null["undefined"]].groupby("method")["value"].mean()
    verdict = pd.read_csv(job_dir / "verdict.csv").set_index("method")["verdict"]
    cells = []
    for method in methods:
        curve = summary[summary["method"] == method]["mean"].tolist()
        cells.append(" / ".join(f"{v:.2f}" for v in curve) + f" (null {null[method]:.2f}, {verdict[method]})")
    return f"| {job} | " + " | ".join(cells) + " |"


def main(run_dir: str) -> None:
    root = Path(run_dir).resolve()
    jobs = sorted((p.parent.name, p.parent) for p in root.glob("*/metrics.csv"))
    if not jobs:
        sys.exit(f"no finished jobs (metrics.csv) under {root}")
    print(f"<!-- {root} -->")
    if all(job in NOTEBOOKS for job, _ in jobs):
        for job, job_dir in jobs:
            print("\n".join(comparison(job, job_dir)))
        return
    print("| job | gradient: logits / fc1 / conv2 / conv1 | guided_backprop: logits / fc1 / conv2 / conv1 |")
    print("| --- | --- | --- |")
    for job, job_dir in sorted(jobs, key=lambda item: item[0] != "released"):
        print(ablation_row(job, job_dir))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
