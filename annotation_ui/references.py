"""A campaign's reference pictures: one picture per gesture class, shown to annotators.

A campaign keeps them in a folder (local or ``s3://``) of ``<gesture>.png`` / ``.jpg`` /
``.jpeg`` files, one per gesture class of its taxonomy. The Label Studio back end copies them
under the dataset root (``references/``), serves them the way it serves the photos, shows the
assigned gesture's picture beside each photo and all of them in the instructions. The demo's
folder is drawn by the generator (``tasks.simulation.references``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape

from tasks.storage import Storage

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
REFERENCES_PREFIX = "references"  # where the pictures are served from, under the dataset root


class ReferencePicturesError(ValueError):
    """A reference folder that does not give exactly one picture for every gesture class."""


def reference_files(names: Iterable[str], *, gestures: Sequence[str]) -> dict[str, str]:
    """gesture -> its picture's file name, among the file ``names`` of a reference folder.

    Names are matched case-insensitively on ``<gesture><suffix>``; other files are ignored.
    ``ReferencePicturesError`` names every class without a picture, or with several.
    """
    found: dict[str, list[str]] = {g: [] for g in gestures}
    for name in names:
        stem, dot, suffix = name.rpartition(".")
        if dot and f".{suffix.lower()}" in PICTURE_SUFFIXES and stem.lower() in found:
            found[stem.lower()].append(name)
    missing = [g for g, files in found.items() if not files]
    several = {g: sorted(files) for g, files in found.items() if len(files) > 1}
    if missing or several:
        problems = [f"no picture for {', '.join(missing)}"] if missing else []
        problems += [f"several pictures for {g} ({', '.join(f)})" for g, f in several.items()]
        raise ReferencePicturesError(
            f"reference pictures: {'; '.join(problems)} (one <gesture>.png or .jpg per class)")
    return {g: files[0] for g, files in found.items()}


def read_references(folder: Storage, *, gestures: Sequence[str]) -> dict[str, tuple[str, bytes]]:
    """gesture -> (suffix, bytes) of each class's picture in ``folder`` (its top level)."""
    names = [key for key in folder.list() if "/" not in key]
    files = reference_files(names, gestures=gestures)
    return {g: ("." + name.rpartition(".")[2].lower(), folder.read_bytes(name))
            for g, name in files.items()}


def reference_key(gesture: str, suffix: str) -> str:
    """Where a class's picture is served from, under the dataset root."""
    return f"{REFERENCES_PREFIX}/{gesture}{suffix}"


def reference_grid(urls: Mapping[str, str]) -> str:
    """HTML for the instructions: every class's picture with its name, in a grid."""
    cells = "\n".join(
        f'  <figure class="hagrid-ref"><img src="{escape(url)}" alt="{escape(gesture)}" '
        f'width="84" height="84"><figcaption>{escape(gesture)}</figcaption></figure>'
        for gesture, url in urls.items())
    return f'<div class="hagrid-refs">\n{cells}\n</div>'
