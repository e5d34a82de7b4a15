"""Label Studio label configs and annotator instructions of the crowd stages, and the
mapping from a Label Studio result back to an answer value (``tasks.crowd.answers``)."""

from __future__ import annotations

from importlib import resources
from typing import Any
from xml.sax.saxutils import escape

from schemas.crowd import Stage

REVIEW_NOTE = ('  <Header value="Why this image is back: $note. Correct the boxes, labels and '
               'leading hand shown, then submit." size="5"/>')
DISAGREED = "the annotators disagreed"  # the note of a review that no audit asked for


def label_config(stage: Stage, *, taxonomy: str | None = None,
                 review: bool = False) -> str:
    """The Label Studio XML config of ``stage`` (``annotation_ui/<stage>.xml``).

    The annotation config gets one rectangle label per box label of the taxonomy (every
    gesture, then ``no_gesture``); its ``review`` variant (the expert review project) also
    shows the task's ``note``: what an audit suspects, or ``DISAGREED``.
    """
    xml = resources.files("annotation_ui").joinpath(f"{stage.value}.xml").read_text()
    xml = xml.replace("<!-- REVIEW -->\n", f"{REVIEW_NOTE}\n" if review else "")
    if stage is Stage.ANNOTATION:
        from schemas.taxonomy import DEFAULT_TAXONOMY, load_taxonomy

        labels = load_taxonomy(taxonomy or DEFAULT_TAXONOMY).box_labels
        lines = "\n".join(f'    <Label value="{escape(label)}"/>' for label in labels)
        xml = xml.replace("<!-- LABELS -->", lines)
    return xml


def instructions(stage: Stage) -> str:
    """The HTML instructions shown to annotators before they start."""
    name = f"{stage.value}_instructions.html"
    return resources.files("annotation_ui").joinpath(name).read_text()


def result_value(stage: Stage, result: Any) -> Any:
    """The answer value inside a Label Studio ``result`` list, for ``canonical_answer``.

    Validation gives ``{"valid": [...], "reason": [...]}``; filtration the list of chosen
    flags. Whatever is missing stays missing, so the screening step records the reason.
    """
    chosen: dict[str, list[Any]] = {}
    for item in result if isinstance(result, list) else []:
        if not isinstance(item, dict) or item.get("type") != "choices":
            continue
        value = item.get("value")
        choices = value.get("choices") if isinstance(value, dict) else None
        chosen.setdefault(str(item.get("from_name")), []).extend(
            choices if isinstance(choices, list) else [choices])
    if stage is Stage.ANNOTATION:
        return result  # boxes and leading hand: parsed by tasks.annotate.boxes.from_labelstudio
    if stage is Stage.VALIDATION:
        return {"valid": chosen.get("valid"), "reason": chosen.get("reason")}
    return chosen.get("flags")
