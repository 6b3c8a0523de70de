"""What the front end needs to know about the model: the oversampling range it was trained on.

The training configuration stored in a weights file (meta["train_config"]["sim"]["oversampling"], written by
models.train) is the model's own record of the range; a file without it (older exports, Keras imports, a
stand-in predictor) falls back to the simulator's default training range, and the result says so.
"""
from __future__ import annotations

from typing import Any


def training_oversampling(model: Any) -> tuple[tuple[float, float], str]:
    """(lo, hi) oversampling range of a model (a LoadedModel, or a bound predict_phase of one) and its source."""
    model = getattr(model, "__self__", model)
    meta = getattr(model, "meta", None) or {}
    sim = (meta.get("train_config") or {}).get("sim") or {}
    rng = sim.get("oversampling")
    if rng and len(rng) == 2:
        return (float(rng[0]), float(rng[1])), f"model {getattr(model, 'name', '?')} training config"
    from physics.simulate import SimParams

    lo, hi = SimParams().oversampling
    return (float(lo), float(hi)), "simulator default (the model file records no training range)"
