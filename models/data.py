"""Training data: simulated patterns generated on the fly, with fixed held-out seeds for validation and test.

Seed spaces never overlap, so the validation and test crystals are never seen in training:
training uses seeds from TRAIN_SEED0 upwards, validation VAL_SEED0.., test (evaluation) TEST_SEED0.. .
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
from torch.utils.data import Dataset

from models.loss import normalise_intensity
from physics.simulate import WIDE, SimParams, simulate_sample

TRAIN_SEED0 = 10_000_000
VAL_SEED0 = 1_000
TEST_SEED0 = 2_000_000

# Named training distributions. "paper" (the default, and what every stored run without a name means) is the
# paper's three shape and three field families; "wide" adds the other nanocrystal shapes and strain fields,
# oversampling 2-5, peak counts 1e3-1e7, gaps, bad pixels and a small background (physics.simulate.WIDE).
SIM_DISTRIBUTIONS = {"paper": SimParams(), "wide": WIDE}


def sim_distribution(name: str) -> SimParams:
    """The named training distribution (see SIM_DISTRIBUTIONS); a one-line error for an unknown name."""
    if name not in SIM_DISTRIBUTIONS:
        raise ValueError(f"unknown simulation distribution {name!r}; choose from {sorted(SIM_DISTRIBUTIONS)}")
    return SIM_DISTRIBUTIONS[name]


def sample_to_tensors(sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(network input, target phase), each (1, n, n, n) float32: normalised log intensity and reciprocal phase."""
    x = normalise_intensity(torch.from_numpy(np.ascontiguousarray(sample["intensity"]))[None])
    y = torch.from_numpy(np.ascontiguousarray(sample["phase"]))[None]
    return x.float(), y.float()


class SimulatedPatterns(Dataset):
    """Index i -> the simulated sample of seed seed0 + i, as (input, target phase)."""

    def __init__(self, seed0: int, length: int, params: SimParams = SimParams()):
        self.seed0, self.length, self.params = seed0, length, params

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        if not 0 <= i < self.length:
            raise IndexError(i)
        return sample_to_tensors(simulate_sample(self.seed0 + i, self.params))


def params_to_dict(p: SimParams) -> dict:
    """JSON-friendly form of the simulation parameters (kept in checkpoints and model cards)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(p).items()}


def params_from_dict(d: dict) -> SimParams:
    """Inverse of params_to_dict."""
    return SimParams(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})
