"""The release quality report: plots and tables of a manifest, as a static HTML folder.

``write_report`` writes ``index.html`` and one PNG per plot (``report/`` of a release, see
``schemas.release``). The same inputs give the same bytes: matplotlib's style is pinned to
its defaults while drawing, the PNG ``Software`` text is dropped, nothing carries a time,
and every order is either given (classes, splits, stages) or sorted.

``prepare_report`` (pure, vectorised: the boxes are flattened once through Arrow) and
``render_html`` (pure) hold the logic; ``write_report`` only draws and writes.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.style
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from data_contracts.page import DATA_DOCS_NOTE
from schemas.annotation import FREE_HAND_LABEL
from schemas.release import CONTRACTS_PAGE, DATA_CARD, DATA_DOCS, SPLITS
from tasks.publish.samples import ReadImage, write_sample_strips

STAGES: tuple[str, ...] = ("ingest", "validation", "filtration", "annotation")
REQUIRED_COLUMNS: tuple[str, ...] = ("split", "gesture", "user_id", "boxes", "labels",
                                     "box_agreement", "leading_hand", "leading_conf")
BOX_TYPE = pa.list_(pa.list_(pa.float64(), 4))
INDEX = "index.html"
DPI = 100
WIDTH_IN = 8.0  # every figure is 800 px wide
BINS = 50
SIZE_MARGIN = 0.01  # least margin around the box sizes on their axis
SUBJECT_BARS = 30  # at most this many bars of images per subject
MAX_LABEL = 60  # characters of a data string shown on a plot axis (the tables show it all)


@dataclass(frozen=True)
class ReportData:
    """Everything the plots and tables need, prepared once from the manifest."""

    images: pd.DataFrame  # per image: split, gesture, user_id, leading_hand, leading_conf,
    #                       n_boxes, n_free (no_gesture boxes)
    classes: list[str]  # class axis: the taxonomy order, then unknown classes sorted
    splits: list[str]  # SPLITS order, then unknown split names sorted
    class_split: pd.DataFrame  # images per class (rows) and split (columns)
    xywh: np.ndarray  # (n_boxes, 4) float: every box, [x, y, w, h] relative
    free: np.ndarray  # (n_boxes,) bool: the box is labelled no_gesture
    agreement: np.ndarray  # finite box_agreement values of every box
    rejections: pd.DataFrame  # stage, reason, count: summed, stages in pipeline order


def prepare_report(manifest: pd.DataFrame, *, rejections: pd.DataFrame,
                   gestures: Sequence[str]) -> ReportData:
    """Flatten and count a manifest (all splits) and the rejection counts for the report."""
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    boxes = _arrow_list(manifest["boxes"], BOX_TYPE)
    labels = _arrow_list(manifest["labels"], pa.list_(pa.string()))
    xywh = boxes.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, 4)
    n_boxes = pc.list_value_length(boxes).to_numpy(zero_copy_only=False).astype(np.int64)
    free = labels.flatten().to_numpy(zero_copy_only=False) == FREE_HAND_LABEL
    if len(free) != len(xywh):
        raise ValueError(f"{len(xywh)} boxes but {len(free)} labels in the manifest")
    agreement = _arrow_list(manifest["box_agreement"], pa.list_(pa.float64()))
    agreement_values = agreement.flatten().to_numpy(zero_copy_only=False).astype(float)
    box_image = np.repeat(np.arange(len(manifest)), n_boxes)
    images = pd.DataFrame({
        **{c: manifest[c].astype(str).to_numpy() for c in
           ("split", "gesture", "user_id", "leading_hand")},
        "leading_conf": pd.to_numeric(manifest["leading_conf"], errors="coerce").to_numpy(),
        "n_boxes": n_boxes,
        "n_free": np.bincount(box_image[free], minlength=len(manifest)),
    })
    classes = _ordered(images["gesture"], first=gestures)
    splits = _ordered(images["split"], first=SPLITS, only_present=True)
    return ReportData(
        images=images, classes=classes, splits=splits,
        class_split=count_table(images["gesture"], images["split"], row_order=classes,
                                col_order=splits),
        xywh=xywh, free=free, agreement=agreement_values[np.isfinite(agreement_values)],
        rejections=rejection_table(rejections))


def _arrow_list(column: pd.Series, type_: pa.DataType) -> pa.Array:
    """A list column (numpy object arrays, lists, or Arrow-backed) as one Arrow array."""
    array = pa.array(column, type=type_)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _ordered(values: pd.Series, *, first: Sequence[str], only_present: bool = False
             ) -> list[str]:
    """``first`` (deduplicated, in its order), then the other values seen, sorted."""
    present = set(values.unique().tolist())
    known = [v for v in dict.fromkeys(first) if v in present or not only_present]
    return known + sorted(present - set(known))


def count_table(rows: pd.Series, cols: pd.Series, *, row_order: Sequence[str],
                col_order: Sequence[str]) -> pd.DataFrame:
    """Counts of (row value, column value) pairs in the given orders, zeros filled in."""
    pairs = pd.DataFrame({"r": rows.to_numpy(), "c": cols.to_numpy()})
    counts = pairs.groupby(["r", "c"]).size()
    table = counts.unstack(fill_value=0) if len(counts) else pd.DataFrame()
    table = table.reindex(index=list(row_order), columns=list(col_order), fill_value=0)
    return table.astype(np.int64)


def rejection_table(rejections: pd.DataFrame) -> pd.DataFrame:
    """Rejections summed per (stage, reason); known stages in pipeline order, then others
    sorted; within a stage the largest count first, ties by reason."""
    if len(rejections) == 0:
        return pd.DataFrame({"stage": pd.Series([], dtype=object),
                             "reason": pd.Series([], dtype=object),
                             "count": pd.Series([], dtype=np.int64)})
    table = pd.DataFrame({"stage": rejections["stage"].astype(str).to_numpy(dtype=object),
                          "reason": rejections["reason"].astype(str).to_numpy(dtype=object),
                          "count": rejections["count"].to_numpy(dtype=np.int64)})
    table = table.groupby(["stage", "reason"], as_index=False, sort=True)["count"].sum()
    rank = {s: i for i, s in enumerate(STAGES)}
    table["rank"] = table["stage"].map(lambda s: rank.get(s, len(STAGES)))
    table = table.sort_values(["rank", "stage", "count", "reason"],
                              ascending=[True, True, False, True], kind="mergesort")
    return table.drop(columns="rank").reset_index(drop=True)


# --- plots: each takes the prepared data and returns an unshown Agg figure ---------------

def _figure(*, rows: int = 0, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    """An Agg figure 800 px wide, taller when it has ``rows`` labelled bars or cells."""
    fig = Figure(figsize=(WIDTH_IN, max(3.6, 1.4 + 0.26 * rows)), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _no_data(ax: Axes, title: str) -> None:
    """Mark an empty plot."""
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _short(text: str) -> str:
    """A data string fit for an axis label: one line, at most MAX_LABEL characters."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_LABEL else line[:MAX_LABEL - 1] + "\u2026"


def plot_class_split(data: ReportData) -> Figure:
    """Images per class and split: counts written in cells coloured by share of the split."""
    table = data.class_split
    fig, (ax,) = _figure(rows=len(table))
    title = "images per class and split (colour: share of the split)"
    if table.size == 0 or table.to_numpy().sum() == 0:
        _no_data(ax, title)
        return fig
    counts = table.to_numpy()
    share = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)
    top = max(float(share.max()), 1e-12)
    ax.imshow(share, aspect="auto", cmap="Blues", vmin=0.0, vmax=top,
              interpolation="nearest")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.6 * top else "black")
    ax.set_xticks(range(len(table.columns)), [_short(c) for c in table.columns],
                  parse_math=False)
    ax.set_yticks(range(len(table.index)), [_short(c) for c in table.index],
                  parse_math=False)
    ax.xaxis.tick_top()
    ax.set_title(title)
    return fig


def plot_boxes_per_image(data: ReportData) -> Figure:
    """How many images carry 0, 1, 2, ... boxes."""
    fig, (ax,) = _figure()
    title = "boxes per image"
    per_image = data.images["n_boxes"].to_numpy()
    if len(per_image) == 0:
        _no_data(ax, title)
        return fig
    counts = np.bincount(per_image)
    bars = ax.bar(np.arange(len(counts)), counts, color="tab:blue")
    ax.bar_label(bars, labels=[str(n) for n in counts], fontsize=8)
    ax.set_xticks(np.arange(len(counts)))
    ax.set_xlabel("boxes in the image")
    ax.set_ylabel("images")
    ax.set_title(title)
    return fig


def size_range(size: np.ndarray) -> tuple[float, float]:
    """The box-size axis: the data's range, widened by a tenth on each side (at least 0.01),
    kept within [0, 1]."""
    low, high = float(size.min()), float(size.max())
    margin = max(0.1 * (high - low), SIZE_MARGIN)
    return max(low - margin, 0.0), min(high + margin, 1.0)


def plot_box_size(data: ReportData) -> Figure:
    """Box size sqrt(w * h) (relative to the image), gesture boxes and no_gesture boxes, on
    an axis spanning the sizes found (``size_range``)."""
    fig, (ax,) = _figure()
    title = "box size: sqrt(w * h), relative to the image"
    if len(data.xywh) == 0:
        _no_data(ax, title)
        return fig
    size = np.sqrt(np.clip(data.xywh[:, 2] * data.xywh[:, 3], 0.0, 1.0))
    low, high = size_range(size)
    edges = np.linspace(low, high, BINS + 1)
    for kind, mask, colour in (("gesture", ~data.free, "tab:blue"),
                               (FREE_HAND_LABEL, data.free, "tab:orange")):
        counts, _ = np.histogram(size[mask], bins=edges)
        ax.stairs(counts, edges, color=colour, linewidth=1.5,
                  label=f"{kind} boxes ({int(mask.sum())})")
    ax.set_xlim(low, high)
    ax.set_xlabel(f"sqrt(relative area); the boxes span {size.min():.3f} to {size.max():.3f}")
    ax.set_ylabel("boxes")
    ax.legend()
    ax.set_title(title)
    return fig


def plot_box_position(data: ReportData) -> Figure:
    """2-D histograms of box centres (origin top left, as in the image), per label kind."""
    fig, axes = _figure(rows=8, ncols=2)
    centres = np.clip(data.xywh[:, :2] + data.xywh[:, 2:] / 2, 0.0, 1.0)
    for ax, (kind, mask) in zip(axes, (("gesture", ~data.free), (FREE_HAND_LABEL, data.free)),
                                strict=True):
        title = f"centres of {kind} boxes ({int(mask.sum())})"
        if not mask.any():
            _no_data(ax, title)
            continue
        counts, _, _ = np.histogram2d(centres[mask, 1], centres[mask, 0], bins=BINS // 2,
                                      range=[[0, 1], [0, 1]])
        shown = ax.imshow(counts, extent=(0.0, 1.0, 1.0, 0.0), cmap="viridis",
                          interpolation="nearest")
        fig.colorbar(shown, ax=ax, shrink=0.8)
        ax.set_xlabel("x centre (right)")
        ax.set_ylabel("y centre (down)")
        ax.set_title(title, fontsize=10)
    return fig


def plot_leading_hand(data: ReportData) -> Figure:
    """Left / right leading hand per class (other values, if any, shown too)."""
    images = data.images
    hands = _ordered(images["leading_hand"], first=("left", "right"))
    table = count_table(images["gesture"], images["leading_hand"], row_order=data.classes,
                        col_order=hands)
    fig, (ax,) = _figure(rows=len(table))
    title = "leading hand per class"
    if table.size == 0 or table.to_numpy().sum() == 0:
        _no_data(ax, title)
        return fig
    height = 0.8 / len(hands)
    rows = np.arange(len(table))
    for k, hand in enumerate(hands):
        ax.barh(rows - 0.4 + height * (k + 0.5), table[hand].to_numpy(), height=height,
                label=_short(hand))
    ax.set_yticks(rows, [_short(c) for c in table.index], parse_math=False)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    for text in ax.legend().get_texts():
        text.set_parse_math(False)
    ax.set_title(title)
    return fig


def plot_agreement(data: ReportData) -> Figure:
    """Histograms of per-box annotator agreement and of the leading-hand confidence."""
    fig, axes = _figure(ncols=2)
    conf = data.images["leading_conf"].to_numpy(dtype=float)
    panels = (("box agreement", data.agreement, "boxes"),
              ("leading_conf", conf[np.isfinite(conf)], "images"))
    edges = np.linspace(0.0, 1.0, 21)
    for ax, (name, values, unit) in zip(axes, panels, strict=True):
        if len(values) == 0:
            _no_data(ax, name)
            continue
        counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=edges)
        ax.stairs(counts, edges, fill=True, color="tab:blue")
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel(name)
        ax.set_ylabel(unit)
        ax.set_title(f"{name} (median {float(np.median(values)):.3f}, n={len(values)})",
                     fontsize=10)
    return fig


def plot_rejections(data: ReportData) -> Figure:
    """Rejected items per reason, one colour per stage, stages in pipeline order."""
    table = data.rejections
    fig, (ax,) = _figure(rows=len(table))
    title = "rejections per stage and reason"
    if len(table) == 0:
        _no_data(ax, title)
        return fig
    rows = np.arange(len(table))
    stages = list(dict.fromkeys(table["stage"]))
    colours = {s: f"C{i % 10}" for i, s in enumerate(stages)}
    for stage in stages:
        mask = (table["stage"] == stage).to_numpy()
        bars = ax.barh(rows[mask], table["count"].to_numpy()[mask], color=colours[stage],
                       label=_short(stage))
        ax.bar_label(bars, labels=[str(n) for n in table["count"][mask]], fontsize=8,
                     padding=2)
    ax.set_yticks(rows, [_short(r) for r in table["reason"]], parse_math=False)
    ax.invert_yaxis()
    ax.set_xlabel("rejected")
    for text in ax.legend(title="stage").get_texts():
        text.set_parse_math(False)
    ax.set_title(title)
    return fig


def subject_bins(most: int) -> np.ndarray:
    """Bin edges for images per subject: one bar per count up to ``SUBJECT_BARS`` bars, else
    ``SUBJECT_BARS`` bars of equal whole-number width; edges at half-integers."""
    width = max(1, -(-most // SUBJECT_BARS))  # ceil
    return np.arange(0.5, most + width, width, dtype=float)


def plot_images_per_subject(data: ReportData) -> Figure:
    """Histogram of how many images each subject (user_id) contributed: linear counts, each
    non-empty bar labelled with its count, so that a bar of one subject still shows."""
    fig, (ax,) = _figure()
    title = "images per subject"
    per_subject = data.images["user_id"].value_counts().to_numpy()
    if len(per_subject) == 0:
        _no_data(ax, title)
        return fig
    edges = subject_bins(int(per_subject.max()))
    counts, _ = np.histogram(per_subject, bins=edges)
    bars = ax.bar((edges[:-1] + edges[1:]) / 2, counts, width=np.diff(edges) * 0.9,
                  color="tab:blue")
    ax.bar_label(bars, labels=[str(n) if n else "" for n in counts], fontsize=7, padding=1)
    ax.set_ylim(0, counts.max() * 1.12)  # room for the labels
    ax.set_xlabel("images of the subject")
    ax.set_ylabel("subjects")
    ax.set_title(f"{title} ({len(per_subject)} subjects, median "
                 f"{float(np.median(per_subject)):g})")
    return fig


BOX_AGREEMENT_NOTE = (
    "Box agreement (one value per box): several annotators drew the boxes of an image; the "
    "boxes of one hand were matched across annotators (IoU of at least 0.5 by default), the "
    "published box takes the median of their edges, and its agreement is the mean IoU "
    "(intersection over union) of the annotators' boxes of that hand with the published "
    "box. 1.0: every annotator drew the same box; an imported (HaGRID) box counts 1.0. The "
    "annotation stage asks more annotators when an image's mean box agreement is below 0.7 "
    "(the default min_agreement).")
LEADING_CONF_NOTE = (
    "leading_conf (one value per image): the share of the image's annotators who chose the "
    "published leading hand. The hand is the winner of a vote weighted by the annotators' "
    "skill where skills are known (ties: more annotators, then the name), but leading_conf "
    "counts annotators, not weights: with three annotators it is 1.0 or 0.67. The stage asks "
    "again below 0.75 (the default min_leading_conf). An imported image keeps HaGRID's "
    "value; an image whose leading hand is unknown has none and is not plotted.")
BOX_SIZE_NOTE = (
    "Box size is sqrt(w * h): the side of a square with the box's area, relative to the "
    "image (0.1: a tenth of the image side). The axis spans the sizes found, not 0 to 1.")
SUBJECTS_NOTE = (
    "A subject is a user_id; all images of a subject are in one split. Counts are linear; "
    "each bar is labelled with its number of subjects.")
EXPLANATIONS: dict[str, tuple[str, ...]] = {  # shown under the plot of that file
    "box_size.png": (BOX_SIZE_NOTE,),
    "agreement.png": (BOX_AGREEMENT_NOTE, LEADING_CONF_NOTE),
    "images_per_subject.png": (SUBJECTS_NOTE,),
}

PLOTS: tuple[tuple[str, str, Callable[[ReportData], Figure]], ...] = (
    ("class_split.png", "Class balance per split", plot_class_split),
    ("boxes_per_image.png", "Boxes per image", plot_boxes_per_image),
    ("box_size.png", "Box size", plot_box_size),
    ("box_position.png", "Box position", plot_box_position),
    ("leading_hand.png", "Leading-hand balance", plot_leading_hand),
    ("agreement.png", "Agreement", plot_agreement),
    ("rejections.png", "Rejections per stage", plot_rejections),
    ("images_per_subject.png", "Images per subject", plot_images_per_subject),
)


# --- HTML -------------------------------------------------------------------------------

def _cell(value: object) -> str:
    """One escaped table cell; integers with thousands separators."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    return html.escape(str(value), quote=True)


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """An HTML table; every cell escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>\n"
                   for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def report_totals(data: ReportData) -> list[tuple[str, int]]:
    """The headline counts of the release (and what the stages rejected)."""
    images = data.images
    splits_per_subject = images.groupby("user_id")["split"].nunique()
    return [
        ("images", len(images)),
        ("subjects", int(images["user_id"].nunique())),
        ("boxes", len(data.xywh)),
        ("gesture boxes", int((~data.free).sum())),
        (f"{FREE_HAND_LABEL} boxes", int(data.free.sum())),
        ("subjects in more than one split", int((splits_per_subject > 1).sum())),
        ("not released: rejected or pending (all stages)", int(data.rejections["count"].sum())),
    ]


def _split_rows(data: ReportData) -> list[list[object]]:
    """Images, subjects, boxes and no_gesture boxes per split."""
    groups = data.images.groupby("split")
    table = pd.DataFrame({"images": groups.size(), "subjects": groups["user_id"].nunique(),
                          "boxes": groups["n_boxes"].sum(), "free": groups["n_free"].sum()})
    table = table.reindex(data.splits, fill_value=0).astype(np.int64)
    return [[split, *row] for split, row in zip(table.index, table.to_numpy().tolist(),
                                                strict=True)]


def _class_rows(data: ReportData) -> list[list[object]]:
    """Images per class and split, a total column and a total row."""
    table = data.class_split
    rows: list[list[object]] = [[name, *counts, sum(counts)] for name, counts in
                                zip(table.index, table.to_numpy().tolist(), strict=True)]
    totals = table.to_numpy().sum(axis=0).tolist() if len(table) else [0] * len(table.columns)
    return rows + [["total", *totals, sum(totals)]]


def release_documents(contracts: Mapping[str, Mapping[str, int]]) -> str:
    """Links to the release's other documents (relative to ``report/``), with the verdict of
    the contracts (``contracts``: ``ContractReport.tally``)."""
    passed = sum(c["passed"] for c in contracts.values())
    failed = sum(c["failed"] for c in contracts.values())
    verdict = (f"all {passed} expectations passed on {len(contracts)} tables" if not failed
               else f"{failed} of {passed + failed} expectations failed")
    contracts_about = (f"{verdict}: every expectation, pass or fail, with the values "
                       "observed. One self-contained page: it reads offline.")
    card_about = ("what the release holds, how it was made and how to read it (Markdown: "
                  "plain text in a browser).")
    items = (
        (CONTRACTS_PAGE, "Data contracts", contracts_about),
        (f"../{DATA_CARD}", f"Data card ({DATA_CARD})", card_about),
        (f"../{DATA_DOCS}/index.html", "Great Expectations Data Docs",
         f"the same contracts run as GE renders it. {DATA_DOCS_NOTE}"),
    )
    links = "".join(f"<li><a href=\"{html.escape(href)}\">{html.escape(text)}</a>: "
                    f"{html.escape(about)}</li>\n" for href, text, about in items)
    return f"<h2>Documents of this release</h2>\n<ul>\n{links}</ul>\n"


def contracts_table(contracts: Mapping[str, Mapping[str, int]]) -> str:
    """The contracts' tally per table, linking to the contracts page."""
    rows = [(t, c["passed"], c["failed"]) for t, c in contracts.items()]
    return (f"<h2>Data contracts</h2>\n<p>Expectations per checked table (each one on the "
            f"<a href=\"{CONTRACTS_PAGE}\">contracts page</a>).</p>\n"
            + _table(("table", "passed", "failed"), rows))


def render_html(data: ReportData, *, title: str, plots: Sequence[tuple[str, str]],
                notes: Sequence[str] = (), samples: Sequence[tuple[str, str]] = (),
                contracts: Mapping[str, Mapping[str, int]] | None = None) -> str:
    """The report page: title, notes (e.g. that the data was simulated), with ``contracts``
    (the report of a release) the links to its other documents and the contracts' tally,
    tables, each plot (``(file name, caption)``) in order with its explanation, then the
    sample strips (same form)."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n",
        f"<h1>{esc(title)}</h1>\n",
        *(f"<p class=\"note\"><strong>{esc(n)}</strong></p>\n" for n in notes),
        release_documents(contracts) if contracts is not None else "",
        "<h2>Totals</h2>\n",
        _table(("", "count"), report_totals(data)),
        "<h2>Per split</h2>\n",
        _table(("split", "images", "subjects", "boxes", f"{FREE_HAND_LABEL} boxes"),
               _split_rows(data)),
        "<h2>Images per class and split</h2>\n",
        _table(("class", *data.splits, "total"), _class_rows(data)),
        "<h2>Rejections</h2>\n",
        _table(("stage", "reason", "count"), data.rejections.itertuples(index=False))
        if len(data.rejections) else "<p>none recorded</p>\n",
        contracts_table(contracts) if contracts is not None else "",
    ]
    for name, caption in plots:
        parts.append(f"<h2>{esc(caption)}</h2>\n<img src=\"{esc(name)}\" "
                     f"alt=\"{esc(caption)}\">\n")
        parts.extend(f"<p class=\"explain\">{esc(text)}</p>\n"
                     for text in EXPLANATIONS.get(name, ()))
    if samples:
        parts.append("<h2>Samples per class</h2>\n<p>Published pictures decoded as HaGRID's "
                     "loaders do (no EXIF transpose), with the published boxes: the gesture "
                     "hand red, a free hand (<code>no_gesture</code>) green.</p>\n")
    for name, caption in samples:
        parts.append(f"<h3>{esc(caption)}</h3>\n<img src=\"{esc(name)}\" "
                     f"alt=\"samples of {esc(caption)}\">\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)


_CSS = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
        "td{text-align:right}td:first-child{text-align:left}img{max-width:100%}"
        ".note{background:#fff3cd;border:1px solid #e0c36a;padding:.5em}"
        ".explain{color:#333;font-size:95%}")


def write_report(manifest: pd.DataFrame, *, rejections: pd.DataFrame, out_dir: Path,
                 title: str, gestures: Sequence[str], notes: Sequence[str] = (),
                 read_image: ReadImage | None = None,
                 contracts: Mapping[str, Mapping[str, int]] | None = None) -> Path:
    """Write ``out_dir/index.html`` and its PNG plots; return the index path.

    ``manifest`` is every split's manifest concatenated (columns of ``MANIFEST``),
    ``rejections`` has ``stage``, ``reason``, ``count``; ``gestures`` orders the class axis
    (classes without images are shown too). ``notes`` are shown first (e.g. that photos were
    simulated). With ``read_image`` (published bytes of a manifest row), a strip of sample
    pictures per class with their boxes drawn. ``contracts``: the report of a release, with
    its contracts' tally (``ContractReport.tally``): links to ``contracts.html`` beside it,
    the data card and the Data Docs. Same inputs, same bytes.
    """
    data = prepare_report(manifest, rejections=rejections, gestures=gestures)
    out_dir.mkdir(parents=True, exist_ok=True)
    with matplotlib.style.context("default"):  # independent of the caller's rcParams
        for name, _, plot in PLOTS:
            plot(data).savefig(out_dir / name, format="png", dpi=DPI,
                               metadata={"Software": None})
    samples = [] if read_image is None else write_sample_strips(
        manifest, read_image, out_dir, gestures=data.classes)
    index = out_dir / INDEX
    page = render_html(data, title=title, plots=[(name, caption) for name, caption, _ in PLOTS],
                       notes=notes, samples=samples, contracts=contracts)
    index.write_text(page, encoding="utf-8", newline="\n")
    return index
