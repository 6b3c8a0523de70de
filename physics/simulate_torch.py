"""Batched BCDI simulation on torch tensors (CUDA or CPU): physics.simulate's recipe run on the device.

The crystal of each sample (shape, orientation, oversampling, strain field, phase range) is drawn by the
same code as `physics.simulate.draw_crystal`, with the numpy random generator of the sample's seed for the
few scalars, but every 64³ array lives on the torch device (a `TorchOps` back-end). The diffraction (unitary
FFT), scaling to the peak count, background, Poisson noise and masks are then done for the whole batch at
once. Distributions are those of `physics.simulate`; results are not equal per seed (the Poisson draws and
the random-field noise come from torch generators). Needs torch and numpy only (no scipy), so it runs on a
bare GPU machine.
"""
from __future__ import annotations

import numpy as np
import torch

from physics.simulate import SimParams, detector_mask, draw_crystal


class _TorchXP:
    """numpy-named elementwise functions on torch tensors of one device (float32)."""

    exp = staticmethod(torch.exp)
    cos = staticmethod(torch.cos)
    sin = staticmethod(torch.sin)
    arctan2 = staticmethod(torch.atan2)
    log = staticmethod(torch.log)
    sqrt = staticmethod(torch.sqrt)
    tanh = staticmethod(torch.tanh)
    abs = staticmethod(torch.abs)
    maximum = staticmethod(torch.maximum)
    minimum = staticmethod(torch.minimum)
    where = staticmethod(torch.where)

    def __init__(self, device: torch.device):
        self.device = device

    @staticmethod
    def clip(a, lo, hi):
        return torch.clamp(a, lo, hi)

    def zeros(self, shape, dtype=None):
        return torch.zeros(tuple(shape), dtype=torch.float32, device=self.device)


class TorchOps:
    """torch back-end of the simulator recipe (see physics.simulate.NumpyOps for the numpy one)."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.xp = _TorchXP(self.device)
        self._grids: dict[int, torch.Tensor] = {}

    def grid(self, n: int) -> torch.Tensor:
        if n not in self._grids:
            c = torch.arange(n, dtype=torch.float32, device=self.device) - n // 2
            self._grids[n] = torch.stack(torch.meshgrid(c, c, c, indexing="ij"))
        return self._grids[n]

    def asarray(self, a) -> torch.Tensor:
        if isinstance(a, torch.Tensor):
            return a.to(self.device, torch.float32)
        return torch.as_tensor(np.asarray(a, dtype=np.float32), device=self.device)

    def roll(self, a, shifts):
        return torch.roll(a, tuple(int(s) for s in shifts), dims=(0, 1, 2))

    def nonzero_bounds(self, mask) -> tuple[np.ndarray, np.ndarray]:
        idx = torch.nonzero(mask)
        b = torch.stack([idx.min(0).values, idx.max(0).values]).cpu().numpy()
        return b[0], b[1]

    def bbox(self, support):
        return self.nonzero_bounds(support)

    def com_shift(self, amp) -> np.ndarray:
        n = amp.shape[0]
        ar = torch.arange(n, dtype=torch.float64, device=amp.device)
        a = amp.double()
        total = a.sum()
        com = torch.stack([(a.sum(dim=tuple(j for j in range(3) if j != i)) * ar).sum() for i in range(3)]) / total
        return np.round(n // 2 - com.cpu().numpy()).astype(int)

    def values(self, f, support):
        return f[support]

    def ptp(self, v) -> tuple[float, float]:
        lo, hi = torch.aminmax(v)
        both = torch.stack([lo, hi]).cpu()
        return float(both[0]), float(both[1])

    def remove_ramp(self, f, support):
        """Subtract the least-squares linear ramp over the support (normal equations in float64)."""
        idx = torch.nonzero(support).double()
        a = torch.cat([idx, torch.ones(len(idx), 1, dtype=torch.float64, device=idx.device)], 1)
        y = f[support].double()
        coef = torch.linalg.solve(a.T @ a, a.T @ y)
        n = f.shape
        ramp = sum(coef[i] * torch.arange(n[i], dtype=torch.float64, device=f.device).reshape(
            [-1 if j == i else 1 for j in range(3)]) for i in range(3))
        return (f.double() - ramp).float()

    def standard_normal(self, rng: np.random.Generator, shape):
        gen = torch.Generator(device=self.device).manual_seed(int(rng.integers(2 ** 62)))
        return torch.randn(tuple(shape), generator=gen, device=self.device)

    def lowpass(self, noise, corr: float):
        n = noise.shape[0]
        q = torch.fft.fftfreq(n, device=noise.device)
        q2 = q[:, None, None] ** 2 + q[None, :, None] ** 2 + q[None, None, :] ** 2
        filt = torch.exp(-2 * (np.pi * corr) ** 2 * q2)
        return torch.fft.ifftn(torch.fft.fftn(noise) * filt).real.float()


def diffraction_t(obj: torch.Tensor) -> torch.Tensor:
    """Unitary 3D FFT over the last three axes of centred objects, returned centred (as physics.simulate)."""
    dims = (-3, -2, -1)
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(obj, dim=dims), norm="ortho", dim=dims), dim=dims)


def simulate_batch(seeds, params: SimParams = SimParams(), device: str | torch.device = "cpu",
                   ops: TorchOps | None = None, keep_object: bool = False) -> dict:
    """Simulated samples of the given seeds, stacked on `device`.

    Returns intensity (B,n,n,n, Poisson counts with background, masked voxels 0), intensity_clean, phase
    (reciprocal, the training target), support and mask (bool), and per-sample phase_range, oversampling
    (B,3), peak_counts, background, shape_kind / field_kind (lists) and seed; object when keep_object.
    """
    ops = ops or TorchOps(device)
    dev = ops.device
    n = params.size
    objs, supports, masks, meta = [], [], [], []
    gens = []
    for seed in seeds:
        rng = np.random.default_rng(int(seed))
        c = draw_crystal(rng, params, ops)
        objs.append(torch.polar(c["amp"], c["phi"].float()))
        supports.append(c["support"])
        peak = float(np.exp(rng.uniform(np.log(params.peak_counts[0]), np.log(params.peak_counts[1]))))
        bg = float(rng.uniform(*params.background)) if params.background[1] > 0 else 0.0
        masks.append(torch.from_numpy(detector_mask(rng, n, params.gap_probability, params.masked_fraction,
                                                    params.gap_count)))
        gens.append(int(rng.integers(2 ** 62)))
        rng_phase = c["phi"][c["support"]]
        meta.append((c, peak, bg, rng_phase))
    obj = torch.stack(objs)
    psi = diffraction_t(obj)
    i_clean = psi.real ** 2 + psi.imag ** 2
    peaks = torch.tensor([m[1] for m in meta], dtype=torch.float32, device=dev)
    bgs = torch.tensor([m[2] for m in meta], dtype=torch.float32, device=dev)
    scale = peaks / i_clean.amax(dim=(1, 2, 3))
    i_clean = i_clean * scale[:, None, None, None]
    expected = i_clean + bgs[:, None, None, None]
    if params.noise:
        gen = torch.Generator(device=dev).manual_seed(gens[0])
        intensity = torch.poisson(expected, generator=gen)
    else:
        intensity = expected.clone()
    mask = torch.stack(masks).to(dev)
    intensity = intensity.masked_fill(mask, 0.0)
    ranges = torch.stack([m[3].max() - m[3].min() for m in meta]).float()
    out = {
        "intensity": intensity,
        "intensity_clean": i_clean,
        "mask": mask,
        "phase": torch.angle(psi).float(),
        "support": torch.stack(supports),
        "phase_range": ranges,
        "oversampling": torch.tensor(np.stack([m[0]["oversampling"] for m in meta]), dtype=torch.float32),
        "peak_counts": peaks,
        "background": bgs,
        "shape_kind": [m[0]["shape_kind"] for m in meta],
        "field_kind": [m[0]["field_kind"] for m in meta],
        "seed": torch.tensor([int(s) for s in seeds], dtype=torch.int64),
    }
    if keep_object:
        out["object"] = obj * torch.sqrt(scale)[:, None, None, None]
    return out
