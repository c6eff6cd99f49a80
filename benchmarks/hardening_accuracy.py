"""Measure what output hardening costs in accuracy (issue 6): not a speed benchmark.

Run it with ``.venv/bin/python benchmarks/hardening_accuracy.py [--seeds N]``.

It trains, on scikit-learn's ``load_digits`` (1,797 8x8 images, 10 classes) split 70/30
with a fixed seed, a logistic regression (on standardised pixels) and a 100-tree random
forest, then serves each test image's class probabilities through
:func:`bastion.serving._hardening.harden` under each policy and reports:

* the top-1 accuracy of the label a caller would take from the response (the argmax of the
  returned scores, ties to the lowest class; the first of top-k; the label itself), the
  median over ``--seeds`` noise seeds (default 5; policies without noise are deterministic);
* the mean absolute change of the returned scores against the model's own scores for the
  same classes (median over the seeds; ``-`` for label, which returns no score).

The table goes to stdout, progress to stderr. Needs numpy and scikit-learn (``.venv``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import numpy as np

from _bench import REPO, log, machine

sys.path.insert(0, str(REPO / "src"))

from bastion.serving._hardening import HardenedOutput, OutputPolicy, harden

SPLIT_SEED = 0
POLICIES = (
    "full",
    "full,round=1",
    "full,round=2",
    "top-k=3",
    "top-k=3,round=2",
    "label",
    "full,noise=laplace:0.01",
    "full,noise=laplace:0.05",
    "full,noise=laplace:0.1",
    "full,noise=laplace:0.2",
    "full,noise=gaussian:0.1",
    "label,noise=laplace:0.1",
)


def trained_models() -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The two fitted models, the test images and their true classes."""
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    images, classes = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        images, classes, test_size=0.3, random_state=SPLIT_SEED, stratify=classes
    )
    models: dict[str, Any] = {
        "logreg": make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000, random_state=SPLIT_SEED)
        ),
        "forest": RandomForestClassifier(n_estimators=100, random_state=SPLIT_SEED),
    }
    for name, model in models.items():
        log(f"training the {name}")
        model.fit(x_train, y_train)
    return models, x_test, y_test


def mean_score_change(out: HardenedOutput, scores: np.ndarray) -> float | None:
    """Mean |returned - original| over the scores the response holds; None when it holds none."""
    if out.scores is None:
        return None
    if out.classes is None:
        return float(np.mean(np.abs(out.scores - scores)))
    original = np.take_along_axis(scores, out.classes, axis=1)
    return float(np.mean(np.abs(out.scores - original)))


def measure(
    policy: OutputPolicy, scores: np.ndarray, truth: np.ndarray, seeds: int
) -> tuple[float, float | None]:
    """Median accuracy and median mean score change over ``seeds`` noise seeds."""
    accuracies: list[float] = []
    changes: list[float] = []
    for seed in range(seeds if policy.noise is not None else 1):
        out = harden(scores, policy, rng=np.random.default_rng(seed))
        accuracies.append(float(np.mean(out.predicted_classes() == truth)))
        change = mean_score_change(out, scores)
        if change is not None:
            changes.append(change)
    return statistics.median(accuracies), statistics.median(changes) if changes else None


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=5, help="noise seeds per policy (default 5)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    models, x_test, y_test = trained_models()
    header = ["policy"]
    columns: list[Callable[[str], tuple[str, str, str]]] = []
    for name, model in models.items():
        scores = np.asarray(model.predict_proba(x_test), dtype=np.float64)
        baseline = float(np.mean(np.argmax(scores, axis=1) == y_test))
        header += [f"{name} top-1", "vs full", "|score change|"]

        def column(
            text: str, scores: np.ndarray = scores, baseline: float = baseline
        ) -> tuple[str, str, str]:
            accuracy, change = measure(OutputPolicy.parse(text), scores, y_test, args.seeds)
            shown = "-" if change is None else f"{change:.4f}"
            return f"{accuracy:.2%}", f"{(accuracy - baseline) * 100:+.2f} pt", shown

        columns.append(column)
    rows = [header]
    for text in POLICIES:
        log(f"serving under {text}")
        rows.append([text, *(cell for column in columns for cell in column(text))])
    print(f"Output hardening: top-1 accuracy on load_digits ({len(y_test)} test images)")
    print(
        "logreg: logistic regression on standardised pixels; forest: random forest of 100 "
        f"trees; noise: median over {args.seeds} seeds; scikit-learn "
        f"{metadata.version('scikit-learn')}"
    )
    print(f"machine: {machine()}")
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
