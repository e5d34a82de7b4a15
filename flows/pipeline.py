"""The ``pipeline`` flow: every stage in order, from a crowd batch to a trained baseline.

ingest -> validate -> filter -> annotate -> publish -> train [-> audit], each the stage's own
flow run as a subflow, with one set of parameters. The label audit is off by default: it
trains one model per fold of people, and its flags wait for the next annotation cycle's
reviewers. The dataset root's writer lock is held from ingest
to publish (the stages take it again, re-entrantly); training reads the immutable release
and writes its own run folder, so it runs after the lock is let go. A release version that
exists is not published again: training then uses it as it is.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.annotate import annotate
from flows.crowd import filter_stage, validate
from flows.ingest import DEFAULT_ROOT, ingest
from flows.publish import publish
from flows.root_lock import locked_root
from flows.run_names import pipeline_run_name
from schemas.crowd import CrowdBackendOptions
from schemas.release import CHECKSUMS, check_version
from tasks import progress
from tasks.publish.writer import release_prefix
from tasks.storage import Storage, open_storage

STAGES: tuple[str, ...] = ("ingest", "validation", "filtration", "annotation", "publish",
                           "train", "audit")
SIMULATED_CYCLES = 20  # a simulated crowd answers at once: cycle until the stage settles


def release_exists(root: Storage, version: str) -> bool:
    """Whether ``root`` holds a complete release ``version`` (its ``SHA256SUMS`` is there)."""
    return root.exists(f"{release_prefix(version)}/{CHECKSUMS}")


def crowd_cycles(crowd: str, cycles: int | None) -> int:
    """Pull-decide-push cycles per crowd stage: as given, else until settled for the
    simulated crowd and one for people (whose answers come in over days)."""
    if cycles is not None:
        return cycles
    return SIMULATED_CYCLES if crowd == "simulated" else 1


@flow(name="pipeline", flow_run_name=pipeline_run_name, log_prints=True)
def pipeline(source: str, submissions: str, root: str = DEFAULT_ROOT,
             min_side: int = 720, taxonomy: str = "hagrid_v1",
             crowd: str = "simulated", options: CrowdBackendOptions | None = None,
             cycles: int | None = None, overlap: int = 3, method: str = "ds",
             flag_policy: str = "aggregate", min_agreement: float = 0.7,
             version: str = "v1", fractions: str | None = None, crops: bool = True,
             crop_size: int = 256, crop_scale: float = 2.0, publish_workers: int = 2,
             train: bool = True, epochs: int = 10, batch_size: int = 64, model: str = "small",
             input_size: int = 64, device: str = "auto", view: str = "auto",
             train_workers: int = 2, train_lr: float = 0.005, train_lr_decay: str = "none",
             train_shift: float = 0.0, train_color_jitter: float = 0.0,
             train_flip: float = 0.0, train_warmup_iters: int = 1000, seed: int = 0,
             train_out: str | None = None, audit: bool = False, audit_folds: int = 5,
             audit_epochs: int = 20, s3_endpoint_url: str | None = None, wait_for_lock: float = 0.0
             ) -> dict[str, Any]:
    """Run every stage on ``root``: ingest the batch ``source`` (+ ``submissions``), the
    crowd stages with back end ``crowd`` (``options``: its connection settings; ``cycles``
    per stage, default ``crowd_cycles``), publish ``version`` (with the crops view unless
    ``crops`` is off), then train on it unless ``train`` is off (``train_*``: the train flow's
    parameters of the same names), then, when ``audit`` is on, flag its likely-wrong labels
    with ``audit_folds`` fold models of ``audit_epochs`` epochs (the audit flow; the next
    ``annotate`` run sends the flagged images to review).

    Returns each stage's summary under its name (``STAGES``); ``publish`` is
    ``{"skipped": "exists", "uri": ...}`` when the version existed; ``train`` and ``audit``
    are None when off.
    """
    check_version(version)
    storage = open_storage(root, endpoint_url=s3_endpoint_url)
    opts = options or CrowdBackendOptions(kind=crowd)
    stage: dict[str, Any] = {"crowd": opts.kind, "options": opts,
                             "cycles": crowd_cycles(opts.kind, cycles),
                             "root": root, "overlap": overlap, "s3_endpoint_url": s3_endpoint_url}
    summary: dict[str, Any] = {}
    with locked_root(storage, command="pipeline", wait_s=wait_for_lock):
        _step("ingest", 0)
        summary["ingest"] = ingest(source=source, submissions=submissions, root=root,
                                   min_side=min_side, taxonomy=taxonomy,
                                   s3_endpoint_url=s3_endpoint_url)
        _step("validation", 1)
        summary["validation"] = validate(method=method, **stage)
        _step("filtration", 2)
        summary["filtration"] = filter_stage(method=method, flag_policy=flag_policy, **stage)
        _step("annotation", 3)
        summary["annotation"] = annotate(min_agreement=min_agreement, taxonomy=taxonomy,
                                         **stage)
        _step("publish", 4)
        summary["publish"] = _publish_unless_published(
            storage, root=root, version=version, fractions=fractions, taxonomy=taxonomy, crops=crops,
            crop_size=crop_size, crop_scale=crop_scale, workers=publish_workers,
            s3_endpoint_url=s3_endpoint_url)
    summary["release"] = f"{storage.uri}/{release_prefix(version)}"
    summary["train"] = None
    if train:
        _step("train", 5)
        from flows.train import train as train_flow  # torch: the optional .[train] extra

        summary["train"] = train_flow(release=summary["release"], out=train_out, epochs=epochs,
                                      batch_size=batch_size, model=model,
                                      input_size=input_size, device=device, view=view,
                                      workers=train_workers, seed=seed, lr=train_lr,
                                      lr_decay=train_lr_decay, shift=train_shift,
                                      color_jitter=train_color_jitter, flip=train_flip,
                                      warmup_iters=train_warmup_iters,
                                      s3_endpoint_url=s3_endpoint_url)
    summary["audit"] = None
    if audit:
        _step("audit", 6)
        from flows.audit import audit as audit_flow  # torch and cleanlab: the .[train] extra

        summary["audit"] = audit_flow(release=summary["release"], root=root,
                                      folds=audit_folds, epochs=audit_epochs,
                                      seed=seed, input_size=input_size, model=model,
                                      device=device, view=view,
                                      s3_endpoint_url=s3_endpoint_url)
    _step("done", len(STAGES))
    get_run_logger().info("pipeline done: %s", _outcome(summary))
    return summary


def _outcome(summary: dict[str, Any]) -> str:
    """One line on what each stage ended with."""
    ingested = summary["ingest"]
    parts = [f"ingest accepted {ingested['accepted']} of {ingested['inputs']} inputs"]
    parts += [f"{stage} {summary[stage]['verdicts']}"
              for stage in ("validation", "filtration", "annotation")]
    release = summary["publish"]
    parts.append(f"release {release['version']} "
                 + ("existed" if release.get("skipped") else f"{release['images']} images"))
    if summary["train"] is not None:
        parts.append(f"training in {summary['train']['run_dir']}")
    if summary["audit"] is not None:
        parts.append(f"audit flagged {summary['audit']['flagged']}")
    return "; ".join(parts)


def _publish_unless_published(storage: Storage, *, root: str, version: str,
                              **options: Any) -> dict[str, Any]:
    """Publish ``version``, or say it exists (releases are immutable)."""
    if release_exists(storage, version):
        uri = f"{storage.uri}/{release_prefix(version)}"
        get_run_logger().warning("release %s exists: not published again; training uses it",
                                 uri)
        return {"skipped": "exists", "version": version, "uri": uri}
    return publish(root=root, version=version, **options)


def _step(stage: str, done: int) -> None:
    """Tell a progress listener (the CLI's) and the run's log which stage starts."""
    progress.report(f"pipeline: {stage}", done, len(STAGES))
    if stage != "done":
        get_run_logger().info("stage %d of %d: %s", done + 1, len(STAGES), stage)
