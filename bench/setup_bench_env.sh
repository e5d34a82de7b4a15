#!/usr/bin/env bash
# Create the separate benchmark venv (.venv-bench) with imagededup's hashing path and nothing else.
#
# imagededup is installed with --no-deps: its declared deps pull torch and torchvision, which
# the PHash path never uses. What that path imports is installed instead, pinned by
# bench/constraints-bench.txt: numpy, Pillow, scipy (fftpack.dct), PyWavelets, tqdm and
# scikit-learn (imported by imagededup.handlers.search.retrieval). matplotlib is not needed.
# imagededup.methods/__init__.py and imagededup.utils/__init__.py import torch and matplotlib
# eagerly, so callers import imagededup.methods.hashing with those two package __init__ files
# bypassed (see bench/baselines.py); the probe below does the same.
#
# Idempotent: does nothing when the venv answers the probe and was built from the same
# constraints. Usage: bench/setup_bench_env.sh  (PYTHON=python3.11 to pick the interpreter)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-bench"
constraints="$root/bench/constraints-bench.txt"
stamp="$venv/.constraints-bench.txt"
python="${PYTHON:-python3}"

probe='
import importlib.util, sys, tempfile
from PIL import Image
for name in ("imagededup.methods", "imagededup.utils"):
    sys.modules[name] = importlib.util.module_from_spec(importlib.util.find_spec(name))
from imagededup.methods.hashing import PHash
with tempfile.TemporaryDirectory() as folder:
    for i in range(2):
        Image.new("RGB", (64, 48), (40 * i, 90, 200)).save(f"{folder}/{i}.jpg")
    hashes = PHash(verbose=False).encode_images(image_dir=folder, num_enc_workers=0)
assert len(hashes) == 2, hashes
assert "torch" not in sys.modules
'

if [[ -x "$venv/bin/python" ]] && cmp -s "$constraints" "$stamp" \
    && "$venv/bin/python" -c "$probe" 2>/dev/null; then
    echo "benchmark venv already set up: $venv"
    exit 0
fi

"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { echo "need Python 3.11 (set PYTHON=...)" >&2; exit 1; }
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -c "$constraints")
"${pip[@]}" --no-deps imagededup
"${pip[@]}" numpy Pillow scipy PyWavelets tqdm scikit-learn
"$venv/bin/python" -c "$probe"
cp "$constraints" "$stamp"
echo "benchmark venv ready: $venv"
