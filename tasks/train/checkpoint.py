"""What a run folder holds on disk: weights as safetensors, the optimizer and scheduler state
for ``--resume``, and JSON documents, each written atomically (a temp file renamed)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def _atomic(path: Path, write: Any) -> None:
    """Call ``write(temp_path)``, then rename the temp file onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically create or replace ``path``."""
    _atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Atomically write a JSON document (indented, keys in insertion order)."""
    write_bytes(path, (json.dumps(document, indent=2, allow_nan=False) + "\n").encode())


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ValueError when it is not JSON or not an object."""
    document = json.loads(path.read_text())
    if isinstance(document, dict):
        return document
    raise ValueError(f"{path} is not a JSON object")


def save_weights(model: nn.Module, path: Path, *, metadata: Mapping[str, str]) -> None:
    """The model's state (parameters and buffers) as safetensors, with string metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic(path, lambda tmp: save_file(state, str(tmp), metadata=dict(metadata)))


def load_weights(model: nn.Module, path: Path) -> dict[str, str]:
    """Load safetensors weights into ``model`` (every key must match); return the metadata."""
    from safetensors import safe_open

    model.load_state_dict(load_file(str(path)), strict=True)
    with safe_open(str(path), framework="pt") as fh:
        metadata: dict[str, str] = fh.metadata() or {}
    return metadata


def save_training_state(path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler,
                        progress: Mapping[str, Any]) -> None:
    """Everything resuming needs, in one file written at once: the model, optimizer and
    scheduler state and ``progress`` (completed epochs, their records, the best so far:
    plain values)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "progress": dict(progress)}
    _atomic(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    """Restore the model, optimizer and scheduler from ``save_training_state``'s file;
    return its ``progress``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    progress: dict[str, Any] = state["progress"]
    return progress
