"""Exploratory training run (issue 13): per-epoch loss, gesture macro F1 and leading-hand
accuracy for one setting, on a release's crops view.

Usage: bench/explore_train_lr.py LR BATCH INPUT_PX EPOCHS [RELEASE] [DECAY] [MODEL]
(default release: /tmp/benchtrain/root/releases/v1, made by
``hagrid demo --root /tmp/benchtrain/root --n 2000 --no-train``; default decay: none).
Not the issue's benchmark script (that is ``bench/bench_train.py``).
"""

import sys
import tempfile
import time
from pathlib import Path

import torch

from schemas.train import TrainSettings
from tasks.train.release import open_release
from tasks.train.run import run_epoch, start_run

torch.set_num_threads(1)
lr, bs, size, epochs = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
release = sys.argv[5] if len(sys.argv) > 5 else "/tmp/benchtrain/root/releases/v1"
decay = sys.argv[6] if len(sys.argv) > 6 else "none"
model = sys.argv[7] if len(sys.argv) > 7 else "small"
shift = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
jitter = float(sys.argv[9]) if len(sys.argv) > 9 else 0.0
flip = float(sys.argv[10]) if len(sys.argv) > 10 else 0.0
rel = open_release(release, hash_shards=False)
s = TrainSettings(epochs=epochs, batch_size=bs, input_size=size, lr=lr, workers=0,
                  warmup_iters=50, lr_decay=decay, model=model, shift=shift,
                  color_jitter=jitter, flip=flip)
run = start_run(rel, s, run_dir=Path(tempfile.mkdtemp()) / "r")
for e in range(epochs):
    t = time.perf_counter()
    r = run_epoch(run)
    print(lr, bs, size, e + 1, round(r["loss"], 3), round(r["gesture_f1_macro"], 3),
          round(r["leading_hand_accuracy"], 3), round(time.perf_counter() - t, 1), flush=True)
