"""Classification metrics per head, in numpy: F1 (macro and weighted), accuracy, per-class
precision and recall, and the confusion matrix as a PNG.

Averages follow scikit-learn: a macro average runs over the classes that occur in the
targets or the predictions (a class absent from both says nothing about the model); the
weighted average weighs each class's F1 by its support. A class's F1 is
``2 TP / (2 TP + FP + FN)``, defined whenever the class occurs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tasks.markdown import markdown_text


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, *,
                     n_classes: int) -> np.ndarray:
    """``matrix[t, p]``: how many samples of class ``t`` were predicted as ``p``."""
    t = np.asarray(targets, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"targets {t.shape} and predictions {p.shape} differ in shape")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class indices must lie in [0, {n_classes})")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> list[float | None]:
    """``num / den`` per class; None where ``den`` is 0 (undefined)."""
    return [float(n) / float(d) if d else None for n, d in zip(num, den, strict=True)]


def head_metrics(targets: np.ndarray, predictions: np.ndarray, *,
                 classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro and weighted F1, per-class precision / recall / F1 / support and the
    confusion matrix (rows: targets, columns: predictions) of one head; plain JSON values."""
    matrix = confusion_matrix(targets, predictions, n_classes=len(classes))
    tp = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    fp, fn = predicted - tp, support - tp
    occurs = (support + predicted) > 0
    f1 = np.where(occurs, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    total = int(support.sum())
    per_class = {
        name: {"precision": prec, "recall": rec, "f1": float(f) if seen else None,
               "support": int(s)}
        for name, prec, rec, f, seen, s in zip(
            classes, _ratio(tp, predicted), _ratio(tp, support), f1, occurs, support,
            strict=True)}
    return {
        "samples": total,
        "accuracy": float(tp.sum() / total) if total else None,
        "f1_macro": float(f1[occurs].mean()) if occurs.any() else None,
        "f1_weighted": float((f1 * support).sum() / total) if total else None,
        "per_class": per_class,
        "classes": list(classes),
        "confusion": matrix.tolist(),
    }


def confusion_figure_png(matrix: Sequence[Sequence[int]], *, classes: Sequence[str],
                         title: str) -> bytes:
    """The confusion matrix as a PNG (counts in the cells, rows normalised for the colour);
    the same matrix gives the same bytes."""
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(classes)
    side = max(3.0, 1.2 + 0.36 * n)
    fig = Figure(figsize=(side + 0.8, side), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), list(classes), rotation=90, fontsize=7)
    ax.set_yticks(range(n), list(classes), fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for (row, col), value in np.ndenumerate(counts):
        if value:
            ax.text(col, row, str(value), ha="center", va="center", fontsize=6,
                    color="white" if shares[row, col] > 0.5 else "black")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def metrics_markdown(metrics: dict[str, Any], *, head: str) -> str:
    """One head's figures as Markdown: the summary line, per-class precision / recall /
    support, and the confusion matrix as a table (rows: true classes)."""
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    summary = (f"accuracy {cell(metrics['accuracy'])} · F1 macro {cell(metrics['f1_macro'])}"
               f" · F1 weighted {cell(metrics['f1_weighted'])} · {metrics['samples']} samples")
    lines = [f"### {head}", "", summary, "",
             "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    shown = [name for name, row in metrics["per_class"].items() if row["f1"] is not None]
    for name in shown:
        row = metrics["per_class"][name]
        lines.append(f"| {markdown_text(name)} | {cell(row['precision'])} | "
                     f"{cell(row['recall'])} | {cell(row['f1'])} | {row['support']} |")
    index = {name: i for i, name in enumerate(metrics["classes"])}
    lines += ["", "| true \\ predicted | " + " | ".join(map(markdown_text, shown)) + " |",
              "|---|" + "---:|" * len(shown)]
    for name in shown:
        counts = metrics["confusion"][index[name]]
        cells = " | ".join(str(counts[index[p]]) for p in shown)
        lines.append(f"| {markdown_text(name)} | {cells} |")
    return "\n".join(lines) + "\n"


def score_heads(*, label: np.ndarray, hand: np.ndarray, gesture_hand: np.ndarray,
                gesture_pred: np.ndarray, hand_pred: np.ndarray,
                classes: Sequence[str], hands: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Metrics of both heads over every evaluated box: the gesture head on all of them, the
    leading-hand head on the gesture hands whose leading hand is known."""
    scored = gesture_hand & (hand >= 0)
    return {"gesture": head_metrics(label, gesture_pred, classes=classes),
            "leading_hand": head_metrics(hand[scored], hand_pred[scored], classes=hands)}
