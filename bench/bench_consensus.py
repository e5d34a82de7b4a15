"""Crowd consensus against a planted truth, through the validate and filter stage code.

    .venv/bin/python bench/bench_consensus.py [--n 1000] [--seeds 3] [--out FILE]

Each run writes N synthetic ``images`` rows to a fresh catalog, then runs the validation
stage (``flows.crowd.run_crowd_stage`` in a flow, simulated crowd, up to ``--cycles``
pull-decide-push cycles) and, on two copies of the result, the filtration stage with each
flag policy. The final verdicts are scored against the simulated crowd's planted truth on
the images that are not control (golden) images. A "first round" view re-aggregates only
the round-1 answers of the same run with every method (no re-queue, no review), next to
the score of one random answer per image.

The default plan (``SCENARIOS``) fits in about 15 minutes on 2 cores: GLAD, ZBS and MACE
take seconds per crowd-kit call (four calls per filtration cycle), so they run validation
on the first seed only. ``--full`` runs every method through both stages everywhere;
``--methods`` and ``--scenarios`` pick a subset (e.g. ``--methods glad,zbs,mace
--scenarios 0 --seeds 1``, about 8 minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: the machine is shared
os.environ.setdefault("PREFECT_HOME", str(BENCH / "_work" / "prefect-home"))
sys.path.insert(0, str(BENCH.parent))

import pandas as pd
import pyarrow as pa
from prefect import flow

from flows.crowd import run_crowd_stage
from schemas.crowd import (
    NONE_FLAG,
    YES,
    CrowdBackendOptions,
    CrowdSettings,
    FlagPolicy,
    Queue,
    Stage,
    Verdict,
)
from schemas.tables import IMAGES, SUBMISSIONS
from schemas.taxonomy import load_taxonomy
from tasks.catalog import Catalog, image_id_for, object_key
from tasks.crowd.consensus import METHODS, aggregate, worker_quality
from tasks.crowd.stage import crowd_answers, latest_verdicts, load_stage
from tasks.simulation.crowd import GeneratorTruth, worker_pool
from tasks.simulation.truth import plant_truth_file
from tasks.storage import LocalStorage

ALL_METHODS = ("mv", "wmv", "ds", "glad", "wawa", "zbs", "mace", "ocds")
FAST_METHODS = ("mv", "wmv", "ds", "wawa", "ocds")
SLOW_METHODS = ("glad", "zbs", "mace")  # seconds per crowd-kit call: 4 calls per filtration cycle
POLICIES = (FlagPolicy.ANY_CREDIBLE, FlagPolicy.AGGREGATE)
WORKERS = 20  # honest workers and spammers; one always-yes worker comes on top


@dataclass(frozen=True)
class Scenario:
    """One crowd (spammer share, first-round overlap) and the methods run on it.

    ``methods`` run both stages on every seed; ``slow_methods`` run validation on the first
    seed only (filtration with them is shown in the first-round view); ``seeds`` caps
    ``--seeds`` for the scenario.
    """

    spammer_share: float
    overlap: int
    methods: tuple[str, ...]
    slow_methods: tuple[str, ...] = ()
    seeds: int | None = None

    @property
    def label(self) -> str:
        """How the tables name it."""
        return f"{self.spammer_share:.0%} spam, k={self.overlap}"


SCENARIOS = (
    Scenario(0.3, 3, FAST_METHODS, SLOW_METHODS),
    Scenario(0.3, 5, FAST_METHODS),
    Scenario(0.0, 3, ("mv", "ds", "ocds"), seeds=1),
    Scenario(0.5, 3, FAST_METHODS, seeds=1),
)


# ---- the catalog ---------------------------------------------------------------------------

def write_images(root: Path, *, n: int, seed: int) -> None:
    """N made-up ``images`` rows (no photo behind them: the crowd stages never open one)."""
    gestures = load_taxonomy().gestures
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    rows = []
    for i in range(n):
        sha = hashlib.sha256(f"bench-consensus|{seed}|{i}".encode()).hexdigest()
        rows.append({
            "image_id": image_id_for(sha), "sha256": sha, "object_key": object_key(sha, "JPEG"),
            "format": "JPEG", "width": 1920, "height": 1080, "orientation": 1,
            "bytes": 500_000, "user_id": f"user-{i % 97:03d}",
            "gesture": gestures[i % len(gestures)], "submitted_at": None,
            "submission_id": f"sub-{i}", "phash": 0, "phash_mirror": 0,
            "thumb": bytes(1024), "batch_id": "bench-images", "ingested_at": now})
    source = LocalStorage(Path(f"{root}-planted"))
    files = [f"{r['submission_id']}.jpg" for r in rows]
    plant_truth_file(source, list(zip(files, (r["gesture"] for r in rows), strict=True)),
                     seed=seed)
    subs = [{"submission_id": r["submission_id"], "batch_id": "bench-images",
             "source": source.uri, "file": f, "row_index": i, "user_id": r["user_id"],
             "user_key": r["user_id"], "gesture": r["gesture"], "submitted_at": None,
             "sha256": r["sha256"], "bytes": r["bytes"], "outcome": "accepted", "reason": None,
             "detail": None, "image_id": r["image_id"], "duplicate_of": None,
             "duplicate_distance": None, "duplicate_similarity": None, "ingested_at": now}
            for i, (r, f) in enumerate(zip(rows, files, strict=True))]
    Catalog(LocalStorage(root)).write_batch(
        "bench-images", {"images": pa.Table.from_pylist(rows, schema=IMAGES),
                         "submissions": pa.Table.from_pylist(subs, schema=SUBMISSIONS)},
        info={"kind": "bench"})


@flow(name="bench-crowd-stage")
def stage_flow(stage: Stage, root: str, options: CrowdBackendOptions,
               settings: CrowdSettings, cycles: int) -> dict[str, Any]:
    """The stage as the validate/filter flows run it."""
    return run_crowd_stage(stage, root=root, options=options, settings=settings, cycles=cycles)


# ---- scoring -------------------------------------------------------------------------------

def truth_table(catalog: Catalog, stage: Stage, truth: Callable[[Stage, str], str]) -> pd.DataFrame:
    """Eligible, non-control images of ``stage`` with their planted truth (positive: bad)."""
    tables = load_stage(catalog, stage)
    ids = [i for i in tables.images["image_id"] if i not in tables.golden.index]
    easy = YES if stage is Stage.VALIDATION else NONE_FLAG
    return pd.DataFrame({"bad": [truth(stage, i) != easy for i in ids]}, index=ids)


def score(bad: pd.Series, said_bad: pd.Series, decided: pd.Series) -> dict[str, float]:
    """Accuracy, recall of bad images and false-positive rate over the decided images."""
    bad, said_bad = bad[decided], said_bad[decided]
    return {"accuracy": float((bad == said_bad).mean()),
            "recall": float(said_bad[bad].mean()) if bad.any() else float("nan"),
            "false_pos": float(said_bad[~bad].mean()) if (~bad).any() else float("nan"),
            "undecided": float((~decided).mean())}


def verdict_score(catalog: Catalog, stage: Stage, tt: pd.DataFrame) -> dict[str, float]:
    """The final verdicts of ``stage`` against the truth."""
    v = latest_verdicts(catalog, stage)["verdict"].reindex(tt.index)
    bad_word = Verdict.REJECTED if stage is Stage.VALIDATION else Verdict.EXCLUDED
    return score(tt["bad"], v == bad_word.value, v.notna())


def queue_cost(catalog: Catalog, stage: Stage, n_images: int) -> dict[str, float]:
    """Crowd answers asked per image (control images included), re-queue and review shares."""
    t = load_stage(catalog, stage).tasks
    crowd, review = t[t["queue"] == Queue.CROWD.value], t[t["queue"] == Queue.REVIEW.value]
    return {"answers_per_image": float(crowd["answers_wanted"].sum()) / n_images,
            "requeued": crowd.loc[crowd["round"] >= 2, "image_id"].nunique() / n_images,
            "review": review["image_id"].nunique() / n_images}


def first_round_answers(catalog: Catalog, stage: Stage) -> pd.DataFrame:
    """Accepted crowd answers that came from round-1 tasks (the simulated crowd's files)."""
    tables = load_stage(catalog, stage)
    t = tables.tasks
    r1 = t[(t["queue"] == Queue.CROWD.value) & (t["round"] == 1)]
    origin = "simulated:" + r1["external_id"] + ".csv"
    pairs = set(zip(r1["image_id"], origin))
    a = tables.answers
    a = a[(a["status"] == "accepted") & (a["queue"] == Queue.CROWD.value)]
    keep = [(i, o) in pairs for i, o in zip(a["image_id"], a["origin"])]
    return a.loc[keep, ["image_id", "worker_id", "answer"]].reset_index(drop=True)


def first_round_scores(catalog: Catalog, stage: Stage, tt: pd.DataFrame, *,
                       settings: CrowdSettings, methods: tuple[str, ...],
                       ) -> dict[str, dict[str, float]]:
    """Every method on the round-1 answers only; ``single`` is one random answer per image."""
    answers = first_round_answers(catalog, stage)
    golden = load_stage(catalog, stage).golden
    quality = worker_quality(stage, answers, golden, settings=settings)
    bad_word = Verdict.REJECTED if stage is Stage.VALIDATION else Verdict.EXCLUDED
    out = {}
    for method in methods:
        verdicts = aggregate(stage, answers, golden, quality, settings=settings, method=method)
        v = pd.Series({c.image_id: c.verdict.value for c in verdicts}).reindex(tt.index)
        out[method] = score(tt["bad"], v == bad_word.value, v.notna())
    easy = YES if stage is Stage.VALIDATION else NONE_FLAG
    one = answers.sample(frac=1.0, random_state=0).drop_duplicates("image_id")
    said = (one.set_index("image_id")["answer"] != easy).reindex(tt.index)
    out["single"] = score(tt["bad"], said.fillna(False).astype(bool), said.notna())
    return out


def queue_churn(catalog: Catalog, stage: Stage) -> dict[str, float]:
    """Shares of decided images asked again after their first verdict, or whose verdict flipped."""
    v = catalog.read_table("verdicts").to_pandas()
    v = v[(v["stage"] == stage.value) & ~v["method"].isin(["golden", "review"])]
    t = load_stage(catalog, stage).tasks
    first = v.groupby("image_id")["decided_at"].min()
    last_push = t.groupby("image_id")["pushed_at"].max().reindex(first.index)
    flips = v.groupby("image_id")["verdict"].nunique()
    n = max(len(first), 1)
    return {"asked_after_verdict": float((last_push > first).sum()) / n,
            "verdict_flipped": float((flips > 1).sum()) / n}


def discounted_workers(catalog: Catalog, stage: Stage, kinds: dict[str, str], *,
                       settings: CrowdSettings) -> dict[str, int]:
    """How many workers of each simulated kind the final worker-quality table discounts."""
    tables = load_stage(catalog, stage)
    quality = worker_quality(stage, crowd_answers(tables), tables.golden, settings=settings)
    out = {f"discounted_{k}": 0 for k in ("honest", "spammer", "always_yes")}
    for worker_id in quality.index[quality["discounted"]]:
        out[f"discounted_{kinds[worker_id]}"] += 1
    return out


def stage_outcome(catalog: Catalog, stage: Stage, tt: pd.DataFrame, kinds: dict[str, str], *,
                  settings: CrowdSettings, seconds: float) -> dict[str, float]:
    """Everything measured on one finished stage."""
    n_images = len(load_stage(catalog, stage).images)
    return {**verdict_score(catalog, stage, tt), **queue_cost(catalog, stage, n_images),
            **queue_churn(catalog, stage),
            **discounted_workers(catalog, stage, kinds, settings=settings),
            "images": n_images, "seconds": seconds}


# ---- one run -------------------------------------------------------------------------------

def run_one(sc: Scenario, method: str, *, n: int, seed: int, cycles: int, work: Path,
            base: CrowdSettings, policies: tuple[FlagPolicy, ...],
            first_round: tuple[str, ...]) -> dict[str, Any]:
    """Validation, then filtration under each of ``policies``, on a fresh catalog.

    ``first_round``: the methods the round-1 answers are re-aggregated with (none: skip).
    """
    options = CrowdBackendOptions(kind="simulated", sim_seed=seed, sim_workers=WORKERS + 1,
                                  sim_spammer_share=sc.spammer_share * WORKERS / (WORKERS + 1))
    pool = worker_pool(n_workers=options.sim_workers, spammer_share=options.sim_spammer_share,
                       seed=seed)
    kinds = {w.worker_id: w.kind for w in pool}
    settings = replace(base, overlap=sc.overlap, method=method,
                       max_answers=max(base.max_answers, sc.overlap + 2))
    root = Path(tempfile.mkdtemp(dir=work))
    write_images(root, n=n, seed=seed)
    truth = GeneratorTruth.from_catalog(Catalog(LocalStorage(root))).answer
    start = time.perf_counter()
    stage_flow(Stage.VALIDATION, str(root), options, settings, cycles)
    seconds = time.perf_counter() - start
    catalog = Catalog(LocalStorage(root))
    tt = truth_table(catalog, Stage.VALIDATION, truth)
    out: dict[str, Any] = {"validation": stage_outcome(catalog, Stage.VALIDATION, tt, kinds,
                                                       settings=settings, seconds=seconds)}
    if first_round:
        out["first_validation"] = first_round_scores(catalog, Stage.VALIDATION, tt,
                                                     settings=settings, methods=first_round)
    for policy in policies:
        copy = Path(tempfile.mkdtemp(dir=work))
        shutil.copytree(root, copy, dirs_exist_ok=True)
        fs = replace(settings, flag_policy=policy)
        start = time.perf_counter()
        stage_flow(Stage.FILTRATION, str(copy), options, fs, cycles)
        seconds = time.perf_counter() - start
        cat = Catalog(LocalStorage(copy))
        ft = truth_table(cat, Stage.FILTRATION, truth)
        out[f"filtration_{policy.value}"] = stage_outcome(cat, Stage.FILTRATION, ft, kinds,
                                                          settings=fs, seconds=seconds)
        if first_round:
            # any_credible: one credible flag excludes, whatever the method
            methods = first_round[:1] if policy is FlagPolicy.ANY_CREDIBLE else first_round
            out[f"first_filtration_{policy.value}"] = first_round_scores(
                cat, Stage.FILTRATION, ft, settings=fs, methods=methods)
        shutil.rmtree(copy)
    shutil.rmtree(root)
    return out


# ---- the plan and the report ---------------------------------------------------------------

def plan(scenarios: tuple[Scenario, ...], *,
         seeds: int) -> list[tuple[Scenario, str, int, bool, tuple[str, ...]]]:
    """(scenario, method, seed, with filtration, first-round methods) for every run.

    The first-round view is computed in the run of each scenario's first method, over the
    scenario's methods (and, on the first seed, the slow ones too).
    """
    runs = []
    for sc in scenarios:
        for seed in range(seeds if sc.seeds is None else min(seeds, sc.seeds)):
            for method in sc.methods:
                first = sc.methods + (sc.slow_methods if seed == 0 else ())
                runs.append((sc, method, seed, True, first if method == sc.methods[0] else ()))
            if seed == 0:
                runs += [(sc, method, seed, False, ()) for method in sc.slow_methods]
    return runs


def chosen_scenarios(args: argparse.Namespace) -> tuple[Scenario, ...]:
    """The scenarios of the command line, with ``--full`` or ``--methods`` applied."""
    picked = SCENARIOS if args.scenarios is None else tuple(
        SCENARIOS[int(i)] for i in args.scenarios.split(","))
    if args.full:
        picked = tuple(replace(sc, methods=ALL_METHODS, slow_methods=(), seeds=None)
                       for sc in picked)
    if args.methods:
        methods = tuple(args.methods.split(","))
        unknown = set(methods) - set(METHODS)
        if unknown:
            raise SystemExit(f"unknown methods {sorted(unknown)}; one of {sorted(METHODS)}")
        picked = tuple(replace(sc, methods=methods, slow_methods=()) for sc in picked)
    return picked


def base_settings(args: argparse.Namespace) -> CrowdSettings:
    """The settings every run starts from (overlap and method are set per run)."""
    return CrowdSettings(min_confidence=args.min_confidence)


def median_of(values: list[float]) -> float:
    """The median of the finite values (nan when none)."""
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else float("nan")


def medians(results: list[dict[str, Any]]) -> dict[str, float]:
    """Per key, the median over seeds."""
    return {k: median_of([r[k] for r in results]) for k in results[0]}


def _f(x: float, digits: int = 3) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def _runs_of(results: dict[tuple[Scenario, str], list[dict[str, Any]]],
             key: str) -> list[tuple[Scenario, str, list[dict[str, Any]]]]:
    return [(sc, m, [r[key] for r in runs if key in r]) for (sc, m), runs in results.items()
            if any(key in r for r in runs)]


def validation_table(results: dict[tuple[Scenario, str], list[dict[str, Any]]]) -> list[str]:
    """Final validation verdicts, median over seeds."""
    lines = [("| crowd | method | seeds | accuracy | rejected recall | valid images rejected "
              "| answers/image | re-queued | expert review | asked again after a verdict "
              "| verdict changed | discounted spam/honest/yes | accuracy per seed | s per run |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for sc, method, runs in _runs_of(results, "validation"):
        m = medians(runs)
        lines.append(
            f"| {sc.label} | {method} | {len(runs)} | {_f(m['accuracy'])} | {_f(m['recall'])} "
            f"| {_f(m['false_pos'])} | {_f(m['answers_per_image'], 2)} | {_f(m['requeued'], 2)} "
            f"| {_f(m['review'], 2)} | {_f(m['asked_after_verdict'], 2)} "
            f"| {_f(m['verdict_flipped'], 3)} | {m['discounted_spammer']:g}/{m['discounted_honest']:g}/"
            f"{m['discounted_always_yes']:g} "
            f"| {', '.join(_f(r['accuracy']) for r in runs)} | {_f(m['seconds'], 1)} |")
    return lines


def filtration_table(results: dict[tuple[Scenario, str], list[dict[str, Any]]]) -> list[str]:
    """Final filtration verdicts per flag policy, median over seeds."""
    lines = [("| crowd | method | flag policy | seeds | exclusion recall | false exclusion "
              "| accuracy | answers/image | re-queued | expert review "
              "| discounted spam/honest/yes | s per run |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for policy in POLICIES:
        for sc, method, runs in _runs_of(results, f"filtration_{policy.value}"):
            m = medians(runs)
            lines.append(
                f"| {sc.label} | {method} | {policy.value} | {len(runs)} | {_f(m['recall'])} "
                f"| {_f(m['false_pos'])} | {_f(m['accuracy'])} "
                f"| {_f(m['answers_per_image'], 2)} | {_f(m['requeued'], 2)} "
                f"| {_f(m['review'], 2)} | {m['discounted_spammer']:g}/"
                f"{m['discounted_honest']:g}/{m['discounted_always_yes']:g} "
                f"| {_f(m['seconds'], 1)} |")
    return lines


def first_round_table(results: dict[tuple[Scenario, str], list[dict[str, Any]]]) -> list[str]:
    """Round-1 answers only, every method, and one random answer; median over seeds."""
    lines = [("| crowd | aggregation of round 1 | seeds | validation accuracy "
              "| rejected recall | valid images rejected | no credible answer "
              "| filtration (aggregate policy): exclusion recall | false exclusion |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (sc, _), all_runs in results.items():
        runs = [r for r in all_runs if "first_validation" in r]
        if not runs:
            continue
        names = list(dict.fromkeys(k for r in runs for k in r["first_validation"]))
        for name in names:
            v = [r["first_validation"][name] for r in runs if name in r["first_validation"]]
            f = [r["first_filtration_aggregate"][name] for r in runs
                 if name in r.get("first_filtration_aggregate", {})]
            mv, mf = medians(v), medians(f) if f else {}
            label = "one random answer" if name == "single" else name
            lines.append(
                f"| {sc.label} | {label} | {len(v)} | {_f(mv['accuracy'])} | {_f(mv['recall'])} "
                f"| {_f(mv['false_pos'])} | {_f(mv['undecided'], 3)} "
                f"| {_f(mf.get('recall', float('nan')))} "
                f"| {_f(mf.get('false_pos', float('nan')))} |")
        anyc = [next(iter(r["first_filtration_any_credible"].values())) for r in runs]
        ma = medians(anyc)
        lines.append(f"| {sc.label} | any method, any_credible policy | {len(anyc)} | | | | "
                     f"| {_f(ma['recall'])} | {_f(ma['false_pos'])} |")
    return lines


def most_undecided(results: dict[tuple[Scenario, str], list[dict[str, Any]]]) -> float:
    """The largest share of images left without a final verdict in any stage run."""
    return max((r[k]["undecided"] for runs in results.values() for r in runs for k in r
                if k == "validation" or k.startswith("filtration_")), default=0.0)


def report(results: dict[tuple[Scenario, str], list[dict[str, Any]]], *,
           args: argparse.Namespace, total_s: float) -> str:
    """The Markdown results file."""
    default = base_settings(args)
    head = [
        "# Crowd consensus against a planted truth", "",
        (f"`.venv/bin/python bench/bench_consensus.py {' '.join(sys.argv[1:])}` "
         f"({total_s / 60:.1f} min, {os.cpu_count()} cores, one process)"), "",
        (f"- {args.n} synthetic `images` rows; validation with `flows.crowd.run_crowd_stage` "
         f"(simulated crowd, up to {args.cycles} cycles), then filtration on the accepted "
         "images, once per flag policy. Scores are over non-control images; median over seeds "
         "(seed = worker pool, planted truth, image ids)."),
        (f"- Crowd: {WORKERS} workers (honest, accuracy U(0.8, 0.95), and spammers answering at "
         "random) plus one always-yes worker; planted invalid rate 0.2, flag rate 0.12; "
         f"{CrowdBackendOptions().sim_golden} control images per stage."),
        (f"- Settings: `CrowdSettings` defaults except overlap k and method: requeue "
         f"+{default.requeue_answers} up to {default.max_answers} answers, min_confidence "
         f"{default.min_confidence}, golden_overlap {default.golden_overlap}, skill_floor "
         f"{default.skill_floor}, min_golden {default.min_golden}, min_flag_votes "
         f"{default.min_flag_votes}, flag_threshold {default.flag_threshold}."),
        ("- answers/image: crowd answers asked (stage_tasks answers_wanted, control images "
         "included) per image of the stage; re-queued, expert review: shares of images; "
         "asked again after a verdict: share of crowd-decided images pushed again later; "
         "verdict changed: share of crowd-decided images whose verdict later changed; "
         "discounted: workers of each simulated kind left out by the control-task check "
         "(of the pool's spammers / honest / 1 always-yes) at the end of the stage."),
        ("- First round: the round-1 answers of each image (k, or 10 for control images) "
         "aggregated once with the stage's worker-quality table; no credible answer: images "
         "whose round-1 answers all came from discounted workers (left out of the scores)."),
        (f"- Images still without a verdict after the cycles: {most_undecided(results):.3f} "
         "(largest share over all runs)."),
    ]
    if any(sc.slow_methods for sc in chosen_scenarios(args)):
        head.append(f"- Slow methods ({', '.join(SLOW_METHODS)}) run validation on seed 0 "
                    "only; their filtration appears in the first-round view. `--full` runs "
                    "every method through both stages in every scenario.")
    return "\n".join(
        head + ["", "## Validation: final verdicts", ""] + validation_table(results)
        + ["", "## Filtration: final verdicts", ""] + filtration_table(results)
        + ["", "## First round only (k answers, no re-queue, no review)", ""]
        + first_round_table(results)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--full", action="store_true", help="every method, stage and seed")
    parser.add_argument("--methods", help="comma-separated: run only these, through both stages")
    parser.add_argument("--scenarios", help="comma-separated indices into SCENARIOS")
    parser.add_argument("--min-confidence", type=float, default=CrowdSettings.min_confidence)
    parser.add_argument("--out", default=str(BENCH / "results_consensus.md"))
    args = parser.parse_args()
    work = BENCH / "_work"
    work.mkdir(exist_ok=True)
    results: dict[tuple[Scenario, str], list[dict[str, Any]]] = {}
    start = time.perf_counter()
    for sc, method, seed, both, first in plan(chosen_scenarios(args), seeds=args.seeds):
        t = time.perf_counter()
        run = run_one(sc, method, n=args.n, seed=seed, cycles=args.cycles, work=work,
                      base=base_settings(args), policies=POLICIES if both else (),
                      first_round=first)
        results.setdefault((sc, method), []).append(run)
        print(f"{sc.label} {method} seed {seed}: {time.perf_counter() - t:.1f} s "
              f"(total {time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    markdown = report(results, args=args, total_s=time.perf_counter() - start)
    (work / f"{Path(args.out).stem}.json").write_text(json.dumps(
        [{"scenario": asdict(sc), "method": m, "runs": runs} for (sc, m), runs in results.items()],
        indent=1))
    Path(args.out).write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
