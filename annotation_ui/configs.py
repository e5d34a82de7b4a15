"""Label Studio label configs and annotator instructions of the crowd stages, and the
mapping from a Label Studio result back to an answer value (``tasks.crowd.answers``).

Choices show readable text and store our ids: ``<Choice value="Wrong gesture"
alias="wrong_gesture"/>`` records ``wrong_gesture``, the value the answers table expects.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

from annotation_ui.references import reference_grid
from schemas.crowd import Stage

REVIEW_NOTE = ('  <Header value="Why this image is back: $note. Correct the boxes, labels and '
               'leading hand shown, then submit." size="5"/>')
DISAGREED = "the annotators disagreed"  # the note of a review that no audit asked for
REFERENCE_PICTURE = ('      <View className="hagrid-reference">\n'
                     '        <Image name="reference" value="$reference" width="180px" '
                     'maxWidth="180px" maxHeight="180px"/>\n'
                     '      </View>')
REFERENCES_SECTION = """<h3>Reference pictures</h3>
<p>Each gesture as it should look, shown with the right hand (with the left hand it is the mirror
image). The assigned gesture's picture is also shown beside each photo.</p>
{grid}
"""
STAGES_WITH_REFERENCES = (Stage.VALIDATION, Stage.ANNOTATION)  # where the gesture matters


def label_config(stage: Stage, *, review: bool = False, references: bool = False) -> str:
    """The Label Studio XML config of ``stage`` (``annotation_ui/<stage>.xml``).

    The annotation config's box labels come from each task (``box_label_options``), so the
    assigned gesture's label is the one already selected; its ``review`` variant (the expert
    review project) also shows the task's ``note``: what an audit suspects, or ``DISAGREED``.
    With ``references``, validation and annotation tasks show the assigned gesture's
    reference picture (the task's ``reference``) beside the photo.
    """
    xml = resources.files("annotation_ui").joinpath(f"{stage.value}.xml").read_text()
    xml = xml.replace("<!-- REVIEW -->\n", f"{REVIEW_NOTE}\n" if review else "")
    return xml.replace("<!-- REFERENCE -->\n", f"{REFERENCE_PICTURE}\n" if references else "")


def box_label_options(labels: tuple[str, ...], *, assigned: str) -> list[dict[str, Any]]:
    """The annotation task's box labels (every box label of the taxonomy, in its order), the
    ``assigned`` gesture's one selected, so a box drawn first gets it."""
    return [{"value": label, **({"selected": True} if label == assigned else {})}
            for label in labels]


def instructions(stage: Stage, *, references: Mapping[str, str] | None = None) -> str:
    """The HTML instructions shown to annotators before they start; ``references`` (gesture
    -> picture URL) adds every class's reference picture with its name.

    Written as Label Studio stores them (it cleans the HTML: no ``/>``, no ``>`` in CSS),
    so an unchanged project is not updated again.
    """
    name = f"{stage.value}_instructions.html"
    html = resources.files("annotation_ui").joinpath(name).read_text()
    return html.replace("<!-- REFERENCES -->\n", REFERENCES_SECTION.format(
        grid=reference_grid(references)) if references else "")


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
