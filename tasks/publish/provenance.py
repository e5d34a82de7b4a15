"""Whether a release's photos or crowd answers were simulated, so the card and report say so.

Photos are simulated when the file they were ingested from lies in a batch written by the
generator (its ``truth.jsonl`` names the file: ``tasks.simulation.crowd.read_truth_file``).
Crowd answers are simulated when they came from the simulated back end (``origin``
``simulated:...`` in the ``answers`` table).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import pyarrow.compute as pc

from tasks.catalog import Catalog
from tasks.simulation.crowd import read_truth_file
from tasks.storage import open_storage

SIMULATED_ORIGIN = "simulated:"


def simulation_provenance(catalog: Catalog, image_ids: Iterable[str], *,
                          endpoint_url: str | None = None) -> dict[str, Any]:
    """Counts over the released ``image_ids``: ``photos`` (simulated, total) and per crowd
    stage the accepted answers on them (simulated, total)."""
    ids = set(image_ids)
    subs = catalog.read_table("submissions", columns=["source", "file", "image_id"],
                              filters=pc.field("outcome") == "accepted").to_pandas()
    subs = subs[subs["image_id"].isin(ids)]
    simulated_photos = 0
    for source, rows in subs.groupby("source"):
        try:
            known = read_truth_file(open_storage(str(source), endpoint_url=endpoint_url))
        except (ValueError, OSError):
            known = {}
        simulated_photos += int(rows["file"].isin(known.keys()).sum())
    answers = catalog.read_table("answers", columns=["stage", "image_id", "origin"],
                                 filters=pc.field("status") == "accepted").to_pandas()
    answers = answers[answers["image_id"].isin(ids)]
    stages = {}
    for stage, rows in answers.groupby("stage"):
        simulated = rows["origin"].str.startswith(SIMULATED_ORIGIN)
        stages[str(stage)] = {"simulated": int(simulated.sum()), "total": len(rows)}
    return {"photos": {"simulated": simulated_photos, "total": len(ids)},
            "answers": dict(sorted(stages.items()))}


def provenance_notes(provenance: dict[str, Any]) -> list[str]:
    """Plain sentences for the card and the report; empty when nothing was simulated."""
    notes = []
    photos = provenance["photos"]
    if photos["simulated"]:
        share = "All" if photos["simulated"] == photos["total"] else \
            f"{photos['simulated']} of {photos['total']}"
        notes.append(f"{share} photos are SIMULATED: drawn by the generator (`hagrid synth`), "
                     "not photographed. They are fit for testing the pipeline and its "
                     "consumers, not for training a model of real hands.")
    simulated = {s: v for s, v in provenance["answers"].items() if v["simulated"]}
    if simulated:
        parts = ", ".join(f"{s} {v['simulated']} of {v['total']}" for s, v in simulated.items())
        notes.append(f"Crowd answers were SIMULATED ({parts} accepted answers): simulated "
                     "workers answered from what the generator drew, with planted errors "
                     "and spammers.")
    return notes


def provenance_frame(provenance: dict[str, Any]) -> pd.DataFrame:
    """The provenance counts as a small table (what, simulated, total)."""
    rows = [("photos", provenance["photos"]["simulated"], provenance["photos"]["total"])]
    rows += [(f"{s} answers", v["simulated"], v["total"])
             for s, v in provenance["answers"].items()]
    return pd.DataFrame(rows, columns=["what", "simulated", "total"]).set_index("what")
