"""The gesture taxonomy is data: JSON files in ``schemas/taxonomy/``, v1 by default."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TAXONOMY_DIR = Path(__file__).parent / "taxonomy"
DEFAULT_TAXONOMY = "hagrid_v1"


@dataclass(frozen=True)
class Taxonomy:
    """Gesture classes a submission may be assigned, and the labels a box may carry."""

    name: str
    gestures: tuple[str, ...]
    extra_box_labels: tuple[str, ...]
    two_handed: tuple[str, ...]

    @property
    def box_labels(self) -> tuple[str, ...]:
        """Every label a hand box may carry: the gestures, then ``no_gesture`` where separate."""
        return self.gestures + tuple(x for x in self.extra_box_labels if x not in self.gestures)

    def is_gesture(self, name: str) -> bool:
        """True when ``name`` is an assignable gesture class of this taxonomy."""
        return name in self.gestures


def available_taxonomies() -> list[str]:
    """Names of the taxonomy files shipped in ``schemas/taxonomy``."""
    return sorted(p.stem for p in TAXONOMY_DIR.glob("*.json"))


@lru_cache(maxsize=8)
def load_taxonomy(name: str = DEFAULT_TAXONOMY) -> Taxonomy:
    """Load a taxonomy by name (``hagrid_v1`` or ``hagrid_v2``) or by a path to a JSON file."""
    path = Path(name) if name.endswith(".json") else TAXONOMY_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown taxonomy {name!r}; available: {available_taxonomies()}")
    raw = json.loads(path.read_text())
    return Taxonomy(
        name=raw["name"],
        gestures=tuple(raw["gestures"]),
        extra_box_labels=tuple(raw.get("extra_box_labels", [])),
        two_handed=tuple(raw.get("two_handed", [])),
    )
