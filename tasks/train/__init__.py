"""Stage 6, baseline training: HaGRID v1's two-head classifier trained from a release.

- ``release``: the release checked (checksums, shards, manifest schema) and its splits read
- ``hands``: one row per hand box of a split, from the full frames or the crops view
- ``dataset``: a map-style Dataset reading pictures by shard offset, HaGRID's square crops
- ``model``: ResNet-18 and a small ResNet in plain torch, with two heads
- ``loop``: one training epoch, one evaluation pass
- ``metrics``: F1 (macro, weighted), accuracy, per-class precision/recall, confusion PNG
- ``checkpoint``: safetensors weights, the resumable state, the run's JSON files
- ``run``: a run from start to finish (run folder, epochs, resume, final figures)
"""
