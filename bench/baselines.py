"""Reference throughputs the ingest benchmark is compared with, measured in the same run.

Two baselines:

* ``time_imagededup``: imagededup's ``PHash().encode_images(image_dir=...)`` on the same folder,
  run with the separate benchmark interpreter (``.venv-bench``, see ``setup_bench_env.sh``).
* ``time_decode_floor``: a bare loop that only decodes each JPEG at 1/8 scale in grayscale
  (Pillow draft mode) over a pool of worker processes: no hashing, no I/O besides the read.

imagededup's ``imagededup.methods`` and ``imagededup.utils`` package ``__init__`` files import
the CNN method and the plotter eagerly (torch, torchvision, matplotlib), which the benchmark venv
does not install. The child script registers those two packages from their import specs without
executing their ``__init__`` and then imports ``imagededup.methods.hashing`` normally; the hashing
path itself never touches torch. The pool is forked so the workers inherit that registration.

Quick check: ``python bench/baselines.py FOLDER [--bench-python .venv-bench/bin/python]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

BENCH_PYTHON = Path(__file__).resolve().parent.parent / ".venv-bench" / "bin" / "python"
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})

# Runs inside the benchmark venv. Prints one JSON line: the wall seconds around the encode call
# only (interpreter start and imports excluded), the hash count and the default worker count.
_IMAGEDEDUP_CHILD = """
import importlib.util, inspect, json, multiprocessing, os, sys, time

multiprocessing.set_start_method("fork")
for name in ("imagededup.methods", "imagededup.utils"):
    spec = importlib.util.find_spec(name)
    sys.modules[name] = importlib.util.module_from_spec(spec)
    setattr(sys.modules["imagededup"], name.rsplit(".", 1)[1], sys.modules[name])
from imagededup.methods.hashing import PHash

encoder = PHash(verbose=False)
workers = inspect.signature(PHash.encode_images).parameters["num_enc_workers"].default
start = time.perf_counter()
hashes = encoder.encode_images(image_dir=sys.argv[1])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "hashed": len(hashes), "workers": workers,
                  "cpu_count": os.cpu_count()}))
"""


@dataclass(frozen=True)
class ImagededupRun:
    """One timed ``PHash().encode_images`` call in the benchmark venv."""

    seconds: float
    hashed: int
    workers: int
    cpu_count: int


def run_imagededup(folder: Path, *, python: str) -> ImagededupRun:
    """Run imagededup's PHash over ``folder`` with its default settings in a subprocess."""
    completed = subprocess.run(
        [python, "-c", _IMAGEDEDUP_CHILD, str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"imagededup run failed:\n{completed.stderr[-4000:]}")
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    return ImagededupRun(**report)


def time_imagededup(folder: Path, *, python: str) -> float:
    """Wall seconds of ``PHash().encode_images(image_dir=folder)``, measured inside the child.

    imagededup's default ``num_enc_workers`` is ``multiprocessing.cpu_count()``: a Pool of that
    many processes with chunks of 100 files. Its pool start-up is part of the call, so it counts.
    """
    return run_imagededup(folder, python=python).seconds


def decode_draft_gray(path: Path) -> int:
    """Decode one JPEG at 1/8 scale in grayscale; return the decoded pixel count (0 if bad)."""
    try:
        with Image.open(path) as im:
            im.draft("L", (im.width // 8, im.height // 8))
            gray = im.convert("L")
    except (OSError, SyntaxError, ValueError):
        return 0
    return gray.width * gray.height


def _warm_up(_: int) -> int:
    """Trivial task that makes every pool worker start before the clock does."""
    time.sleep(0.05)
    return 0


def time_decode_floor(files: list[Path], *, workers: int = 2) -> float:
    """Wall seconds to draft-decode ``files`` over a pool of ``workers`` (pool start excluded)."""
    chunksize = max(1, len(files) // (workers * 4))
    with multiprocessing.get_context("fork").Pool(processes=workers) as pool:
        pool.map(_warm_up, range(workers), chunksize=1)
        start = time.perf_counter()
        pool.map(decode_draft_gray, files, chunksize=chunksize)
        return time.perf_counter() - start


def cached_batch(name: str, n: int, seed: int, **options: Any) -> Path:
    """A generated crowd batch ``bench/_data/<name>-<n>-<seed>`` (``generate_batch`` with
    ``options``), generated once and reused while its ``truth.jsonl`` is there."""
    from tasks.simulation.generator import generate_batch

    out = Path(__file__).parent / "_data" / f"{name}-{n}-{seed}"
    if not (out / "truth.jsonl").exists():
        shutil.rmtree(out, ignore_errors=True)
        generate_batch(out, n=n, seed=seed, workers=2, **options)
    return out


def jpeg_files(folder: Path) -> list[Path]:
    """The JPEG files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in JPEG_SUFFIXES)


def main(argv: list[str] | None = None) -> None:
    """Print both baselines for one folder of JPEGs as images per second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--bench-python", default=str(BENCH_PYTHON))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    files = jpeg_files(args.folder)
    floor_s = time_decode_floor(files, workers=args.workers)
    print(
        f"decode floor ({args.workers} procs): {len(files) / floor_s:8.1f} images/s"
        f"  ({len(files)} files in {floor_s:.2f} s)"
    )
    dedup = run_imagededup(args.folder, python=args.bench_python)
    print(
        f"imagededup PHash ({dedup.workers} procs of {dedup.cpu_count} cpus): "
        f"{dedup.hashed / dedup.seconds:8.1f} images/s  ({dedup.hashed} hashed in "
        f"{dedup.seconds:.2f} s)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
