"""Log-likelihoods and R-factor of a calculated intensity against observed counts (one implementation).

Per-voxel formulas follow PyNX: Poisson 2*(calc - obs + obs*ln(obs/calc)) (calc where obs == 0; the factor 2
is PyNX's numpy helper convention, so a statistically ideal fit tends to ~1; PyNX's GPU kernels omit it),
Gaussian (obs - calc)^2/(obs + 1), Euclidian 4*(sqrt(obs) - sqrt(calc))^2. Sums are normalised like PyNX's
get_llk: observed non-free voxels over (N_observed - N_support - N_free), free voxels over N_free.
The engine (CDI.llk) and physics.metrics both call llk_sums + normalise_llk.
"""
from __future__ import annotations

import torch

#: floor on calc inside the Poisson log (PyNX numpy helper uses 0.1) so obs>0, calc=0 stays finite
CALC_FLOOR = 0.1


def poisson(obs: torch.Tensor, calc: torch.Tensor) -> torch.Tensor:
    """Per-voxel Poisson deviance 2*(calc - obs + obs ln(obs/calc)); calc where obs == 0."""
    ratio = obs / calc.clamp_min(CALC_FLOOR)
    term = calc - obs + obs * torch.log(torch.where(obs > 0, ratio, torch.ones_like(ratio)))
    return 2 * torch.where(obs > 0, term, calc)


def gaussian(obs: torch.Tensor, calc: torch.Tensor) -> torch.Tensor:
    """Per-voxel Gaussian LLK (obs - calc)^2 / (obs + 1)."""
    return (obs - calc) ** 2 / (obs + 1)


def euclidian(obs: torch.Tensor, calc: torch.Tensor) -> torch.Tensor:
    """Per-voxel Euclidian LLK 4 (sqrt(obs) - sqrt(calc))^2."""
    return 4 * (torch.sqrt(obs) - torch.sqrt(calc)) ** 2


def llk_sums(calc: torch.Tensor, iobs: torch.Tensor, observed: torch.Tensor, free: torch.Tensor) -> dict:
    """Un-normalised LLK sums over observed non-free voxels and over free voxels, plus R-factor sums.

    calc, iobs: float tensors of one shape; observed: bool, True where the voxel is measured and not free;
    free: bool free-voxel mask.
    """
    out = {}
    for key, sel in (("", observed), ("_free", free)):
        o = iobs[sel]
        c = calc[sel]
        if not o.numel():
            out.update({n + key: 0.0 for n in ("poisson", "gaussian", "euclidian", "r_num", "r_den")})
            continue
        # Poisson cancels large terms (calc - obs + obs ln(obs/calc)): float64; the others float32, summed in float64
        out["poisson" + key] = float(poisson(o.double(), c.double()).sum())
        out["gaussian" + key] = float(gaussian(o, c).sum(dtype=torch.float64))
        out["euclidian" + key] = float(euclidian(o, c).sum(dtype=torch.float64))
        so = torch.sqrt(o)
        out["r_num" + key] = float((torch.sqrt(c) - so).abs().sum(dtype=torch.float64))
        out["r_den" + key] = float(so.sum(dtype=torch.float64))
    return out


def normalise_llk(sums: dict, nb_observed: int, nb_support: int, nb_free: int) -> dict:
    """PyNX normalisation: non-free LLK / max(N_observed - N_support - N_free, 1), free LLK / N_free.

    nb_observed counts every non-masked voxel (free ones included), as PyNX does.
    """
    n = max(nb_observed - nb_support - nb_free, 1)
    res = {}
    for name in ("poisson", "gaussian", "euclidian"):
        res[f"llk_{name}"] = sums[name] / n
        res[f"llk_{name}_free"] = sums[name + "_free"] / nb_free if nb_free > 0 else float("nan")
    res["r_factor"] = sums["r_num"] / sums["r_den"] if sums["r_den"] > 0 else float("nan")
    res["r_factor_free"] = sums["r_num_free"] / sums["r_den_free"] if sums["r_den_free"] > 0 else float("nan")
    return res
