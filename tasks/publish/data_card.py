"""The data card (``README.md`` of a release): what is in it, how it was made, how to read it.

Everything in the card is computed from the release's manifests and the catalog; it holds no
clock time, so the same catalog gives the same card.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from data_contracts.page import DATA_DOCS_NOTE
from schemas.annotation import FREE_HAND_LABEL
from schemas.release import CONTRACTS_PAGE, CONTRACTS_RESULTS, DATA_DOCS, REPORT


def markdown_table(frame: pd.DataFrame, *, index_name: str) -> str:
    """A pandas frame as a GitHub Markdown table (index first)."""
    head = [index_name, *map(str, frame.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, *values in frame.itertuples(name=None):  # each value keeps its column's type
        lines.append("| " + " | ".join([str(idx), *(_cell(v) for v in values)]) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "-" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def release_figures(manifest: pd.DataFrame) -> dict[str, Any]:
    """Headline counts of a release: images, subjects, boxes, agreement, leading hands.

    ``leading_right_share`` and ``mean_leading_conf`` are over the images whose leading hand
    is known (an imported v2 image has none; ``unknown_leading_hand`` counts them).
    """
    known = manifest["leading_hand"].notna()
    labels = np.concatenate([np.asarray(x, dtype=object) for x in manifest["labels"]]) \
        if len(manifest) else np.array([], dtype=object)
    agreement = np.concatenate([np.asarray(x, dtype=float) for x in manifest["box_agreement"]]) \
        if len(manifest) else np.array([])
    return {
        "images": len(manifest), "subjects": int(manifest["user_id"].nunique()),
        "boxes": len(labels), "no_gesture_boxes": int((labels == FREE_HAND_LABEL).sum()),
        "mean_box_agreement": float(agreement.mean()) if len(agreement) else None,
        "mean_leading_conf": float(manifest.loc[known, "leading_conf"].mean())
        if known.any() else None,
        "leading_right_share": float((manifest.loc[known, "leading_hand"] == "right").mean())
        if known.any() else None,
        "unknown_leading_hand": int((~known).sum()),
    }


def data_card(*, version: str, title: str, licence: str, manifest: pd.DataFrame,
              counts: pd.DataFrame, rejections: pd.DataFrame, info: Mapping[str, Any],
              taxonomy: str, files: Sequence[str], notes: Sequence[str] = ()) -> str:
    """The card's Markdown. ``counts``: images per gesture x split; ``info``: release.json;
    ``notes``: shown in bold under the title (e.g. that photos or answers were simulated)."""
    fig = release_figures(manifest)
    subjects = manifest.groupby("split")["user_id"].nunique() if len(manifest) else pd.Series()
    split_rows = pd.DataFrame({
        "images": counts.sum(axis=0),
        "subjects": subjects.reindex(counts.columns, fill_value=0),
        "fraction": pd.Series(info["splits"].get("fractions", {}),
                              dtype=float).reindex(counts.columns),
        "target fraction": pd.Series(info["settings"]["fractions"]).reindex(counts.columns),
    })
    shown = counts.copy()
    shown.loc["total"] = shown.sum(axis=0)
    parts = [
        f"# {title}: release {version}",
        *(f"**{note}**" for note in notes),
        (f"Licence: {licence}. Taxonomy: `{taxonomy}`. Format: HaGRID annotations, COCO, "
        "Parquet manifests and WebDataset shards (see *Files*)."),
        "## Contents",
        (f"{fig['images']} images of {fig['subjects']} subjects; {fig['boxes']} hand boxes, "
        f"{fig['no_gesture_boxes']} of them `{FREE_HAND_LABEL}` (a free hand). "
        f"Mean box agreement (IoU of annotators with the final box): "
        f"{_opt(fig['mean_box_agreement'])}; mean leading_conf {_opt(fig['mean_leading_conf'])};"
        f" right leading hands {_opt(fig['leading_right_share'])}"
        f"{_unknown_hands(fig['unknown_leading_hand'])}."),
        "### Splits (by subject: no user_id is in two splits)",
        markdown_table(split_rows, index_name="split"),
        _split_notes(info),
        "### Images per class and split",
        markdown_table(shown, index_name="gesture"),
        "## Quality report and data contracts",
        _documents(info),
        "## What each stage rejected",
        _rejections(rejections),
        "## How the data was made",
        HOW_MADE,
        "## Files",
        READING + "\n\n" + "\n".join(f"- `{f}`" for f in files),
    ]
    return "\n\n".join(parts) + "\n"


def _documents(info: Mapping[str, Any]) -> str:
    """Links (relative to the release folder) to the report, the contracts page, the Data
    Docs, and the contracts' count from release.json."""
    checked = info.get("contracts_checked") or {}
    report = (f"- [Quality report]({REPORT}/index.html): tables and plots of this release "
              "(classes, box sizes and positions, leading hands, annotator agreement, "
              "subjects, samples).")
    contracts = (f"- [Data contracts]({REPORT}/{CONTRACTS_PAGE}): {sum(checked.values())} "
                 f"expectations on {len(checked)} tables, checked before the release was "
                 "written, each with its outcome and the values observed; one self-contained "
                 "page that reads offline (the same results as JSON: "
                 f"[{CONTRACTS_RESULTS}]({REPORT}/{CONTRACTS_RESULTS})).")
    docs = (f"- [Great Expectations Data Docs]({DATA_DOCS}/index.html): the same run as GE "
            f"renders it. {DATA_DOCS_NOTE}")
    return f"{report}\n{contracts}\n{docs}"


def _opt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _unknown_hands(count: int) -> str:
    return f" (leading hand unknown on {count} imported images)" if count else ""


def _split_notes(info: Mapping[str, Any]) -> str:
    split = info["splits"]
    return (f"Largest per-class deviation from the target fractions: "
            f"{split['max_abs_deviation']:.4f}. Subjects kept in the split of an earlier "
            f"release: {split['sticky_users']}; near-duplicate links kept inside one split: "
            f"{split['links']}; sticky conflicts (a new link joining subjects already "
            f"published in two splits; each subject keeps its split): "
            f"{split['sticky_conflicts']}.{_source_note(split)}"
            + "".join(f"\n\n**Warning:** {w}." for w in split.get("warnings", [])))


def _source_note(split: Mapping[str, Any]) -> str:
    if not split.get("source_split_images"):
        return ""
    return (f" Imported images kept the split of their source: "
            f"{split['source_split_images'] - split['source_split_moved']} of "
            f"{split['source_split_images']} (the others belong to a subject the source put "
            f"in several splits, or published earlier in another split: "
            f"{split['source_split_conflict_users']} subjects).")


def _rejections(rejections: pd.DataFrame) -> str:
    if rejections.empty:
        return "Nothing was rejected."
    table = rejections.set_index(["stage", "reason"])["count"].to_frame()
    table.index = [f"{s}: {r}" for s, r in table.index]
    return markdown_table(table, index_name="stage: reason")


HOW_MADE = """\
1. **Mining.** Crowd workers photographed themselves showing an assigned gesture. Ingestion
   rejected unreadable, off-spec and badly described submissions, and dropped exact (sha256)
   and near duplicates (perceptual hash, checked against the whole corpus).
2. **Validation.** Several crowd answers per image (did the worker follow the task?),
   aggregated with worker quality estimated on control images; uncertain images got more
   answers, then expert review.
3. **Ethical filtration.** Images showing children, nudity, inscriptions or personal data
   were excluded when the aggregated probability of a flag passed the policy's threshold.
4. **Annotation.** Several annotators drew a box around every hand (the gesture hand
   labelled with its gesture, a free hand `no_gesture`) and marked the leading hand; boxes
   were matched across annotators and merged (median edges); a box's agreement is the mean
   IoU of the annotators' boxes of that hand with the merged box. The leading hand won a
   vote weighted by annotator skill; `leading_conf` is the share of the annotators who chose
   it (a head count, not a weight).
5. **Publication.** Subjects were split so that no user_id and no near-duplicate cluster
   straddles two splits, class-stratified, and sticky across releases. Data contracts
   (`report/contracts.html`, `data_docs/`) passed before the release was written."""

READING = """\
Boxes are `[x, y, w, h]` (top-left corner, width, height) relative to the width and height
of the image. Published images are upright (an EXIF orientation was applied when the photo
carried one) and stripped of metadata (no EXIF, GPS, XMP, IPTC or comments), so a plain
`Image.open(...).convert("RGB")` sees the pixels the boxes describe. `user_id` is a salted
hash; no raw worker id is published. `manifests/<split>.parquet` gives, per image, the shard
and the byte offset, size and sha256 of its image member, so one sample is read with a single
seek. Verify the files with `sha256sum -c SHA256SUMS`."""
