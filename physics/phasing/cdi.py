"""CDI state of the torch phasing engine: data, masks, object and support on one device, stored fft-shifted.

Inputs and outputs are centred numpy arrays (zero frequency / object centre at n//2); inside, every array has its
origin at [0, 0, 0] like PyNX, so no fftshift happens in the loop. FFTs are unitary (norm="ortho").
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from physics.errors import InputError
from physics.phasing import llk as _llk


class Cancelled(Exception):
    """Raised between cycles when the caller's should_cancel() returned True."""


class SupportTooSmall(RuntimeError):
    """The support update left fewer voxels than min_fraction of the array, even after retuning."""


class SupportTooLarge(RuntimeError):
    """The support update kept more voxels than max_fraction of the array, even after retuning."""


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with n torch intra-op threads (None: unchanged), restoring the previous count after.

    On a shared, oversubscribed CPU, 2 OpenMP/MKL threads made our FFT cycles 10-15x slower than 1 thread
    (measured on the project's 2-core machine under load ~7), so callers there should ask for 1.
    """
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device) -> torch.device:
    """Turn "cpu"/"cuda"/"cuda:1"/torch.device into a torch.device, refusing CUDA when none is present."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but no CUDA device is available")
    return dev


def _check_array(name: str, a, shape=None, ndim=3) -> np.ndarray:
    """Validate one input array (dimension, shape, finiteness) and return it as numpy."""
    a = np.asarray(a)
    if a.ndim != ndim:
        raise InputError(f"{name} must be a {ndim}D array, got shape {a.shape}")
    if shape is not None and a.shape != tuple(shape):
        raise InputError(f"{name} has shape {a.shape}, expected {tuple(shape)} like iobs")
    if min(a.shape) < 4:
        raise InputError(f"{name} is too small: shape {a.shape} (each axis needs at least 4 voxels)")
    if np.iscomplexobj(a) or np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name} contains NaN or infinite values")
    return a


class CDI:
    """Coherent diffraction imaging state: iobs, mask, free mask, object and support (PyNX-like).

    iobs: centred 3D intensity (counts, >= 0 where not masked); mask: centred bool, True = masked voxel;
    obj: centred complex starting object (default: ones); support: centred bool (default: whole array).
    """

    def __init__(self, iobs, mask=None, obj=None, support=None, device="cpu", free_mask=None):
        iobs = _check_array("iobs", iobs)
        if np.iscomplexobj(iobs):
            raise InputError("iobs must be real intensities, got a complex array")
        self.shape = tuple(iobs.shape)
        self.device = resolve_device(device)
        if mask is None:
            mask_np = np.zeros(self.shape, dtype=bool)
        else:
            mask_np = _check_array("mask", mask, self.shape).astype(bool)
        iobs = np.where(mask_np, 0, iobs).astype(np.float32)
        if (iobs < 0).any():
            raise InputError(f"iobs has {(iobs < 0).sum()} negative values outside the mask")
        if not (iobs > 0).any():
            raise InputError("iobs is zero everywhere outside the mask")
        self._iobs = self._to_internal(iobs, torch.float32)
        self._mask = self._to_internal(mask_np, torch.bool)
        self._free = torch.zeros_like(self._mask)
        if support is None:
            self._support = torch.ones(self.shape, dtype=torch.bool, device=self.device)
        else:
            self._support = self._to_internal(_check_array("support", support, self.shape).astype(bool), torch.bool)
        if obj is None:
            self._obj = torch.ones(self.shape, dtype=torch.complex64, device=self.device)
        else:
            self._obj = self._to_internal(_check_array("obj", obj, self.shape).astype(np.complex64), torch.complex64)
        self.nb_cycle = 0
        self.zero_mask = False  # True: masked voxels are set to 0 by the projection instead of left free (PyNX)
        self.llk: dict = {}
        self.llk_scale = 1.0  # photons per intensity unit: LLKs are computed on iobs x llk_scale (non-integer data)
        self.support_threshold: float | None = None
        self.history: list[dict] = []  # one entry per support update
        self.llk_history: list[dict] = []  # one entry per LLK computation (calc_llk cycles, LLK operator)
        self._update_fourier_cache()
        self._update_support_cache()
        if free_mask is not None:
            self.set_free_mask(free_mask)

    # ---------------------------------------------------------------- conversions
    def _to_internal(self, a: np.ndarray, dtype) -> torch.Tensor:
        """Centred numpy -> fft-shifted tensor on the device."""
        return torch.from_numpy(np.ascontiguousarray(np.fft.ifftshift(a))).to(device=self.device, dtype=dtype)

    @staticmethod
    def _to_centred(t: torch.Tensor) -> np.ndarray:
        """fft-shifted tensor -> centred numpy copy."""
        return np.fft.fftshift(t.detach().cpu().numpy())

    # ---------------------------------------------------------------- getters / setters (centred numpy)
    def get_obj(self) -> np.ndarray:
        """Current object, centred, complex64."""
        return self._to_centred(self._obj)

    def set_obj(self, obj) -> None:
        """Replace the object (centred complex array of the data shape)."""
        obj = _check_array("obj", obj, self.shape).astype(np.complex64)
        self._obj = self._to_internal(obj, torch.complex64)

    def get_support(self) -> np.ndarray:
        """Current support, centred bool."""
        return self._to_centred(self._support)

    def set_support(self, support) -> None:
        """Replace the support (centred bool array of the data shape)."""
        s = _check_array("support", support, self.shape).astype(bool)
        self._set_support_tensor(self._to_internal(s, torch.bool))

    def get_iobs(self) -> np.ndarray:
        """Observed intensity (masked voxels set to 0), centred."""
        return self._to_centred(self._iobs)

    def get_mask(self) -> np.ndarray:
        """Mask (True = masked), centred."""
        return self._to_centred(self._mask)

    def get_free_mask(self) -> np.ndarray:
        """Free-voxel mask (True = withheld from the projection, used for free LLK), centred."""
        return self._to_centred(self._free)

    @property
    def free_mask(self) -> np.ndarray:
        """Free-voxel mask, centred numpy bool."""
        return self.get_free_mask()

    def set_free_mask(self, free_mask) -> None:
        """Set the free-voxel mask (centred bool); masked voxels are never free."""
        f = _check_array("free_mask", free_mask, self.shape).astype(bool)
        self._free = self._to_internal(f, torch.bool) & ~self._mask
        self._update_fourier_cache()

    @property
    def nb_support(self) -> int:
        """Number of voxels in the support."""
        return self._nb_support

    # ---------------------------------------------------------------- caches
    def _update_fourier_cache(self) -> None:
        """Precompute what the magnitude projection needs: sqrt(Iobs) and the indices of masked/free voxels."""
        self._observed = ~self._mask & ~self._free  # voxels whose amplitude is imposed
        self._sqrt_iobs = torch.sqrt(self._iobs)
        self._unobs_idx = torch.nonzero(~self._observed.reshape(-1)).reshape(-1)
        self._free_idx = torch.nonzero(self._free.reshape(-1)).reshape(-1)
        self.nb_observed = int((~self._mask).sum())
        self.nb_free = int(self._free.sum())

    def _update_support_cache(self) -> None:
        """Precompute float versions of the support used by ER/HIO/RAAR."""
        self._support_f = self._support.to(torch.float32)
        self._nb_support = int(self._support.sum())
        self._coef_cache: dict = {}

    def _set_support_tensor(self, s: torch.Tensor) -> None:
        """Replace the internal support tensor and refresh caches."""
        self._support = s.to(torch.bool)
        self._update_support_cache()

    def _coefs(self, kind: str, beta: float):
        """Per-voxel (a, b) with new = a*obj_prev + b*P_M(obj): HIO a=~S, b=S-beta~S; RAAR a=beta~S, b=S+(1-2beta)~S."""
        key = (kind, float(beta))
        if key not in self._coef_cache:
            s = self._support_f
            ns = 1 - s
            if kind == "HIO":
                self._coef_cache[key] = (ns.clone(), s - beta * ns)
            elif kind == "RAAR":
                self._coef_cache[key] = (beta * ns, s + (1 - 2 * beta) * ns)
            else:
                raise ValueError(f"unknown algorithm {kind}")
        return self._coef_cache[key]

    # ---------------------------------------------------------------- kernels
    def _project(self, calc_llk: bool = False) -> torch.Tensor:
        """Return P_M(obj): unitary FFT, |Psi| replaced by sqrt(Iobs) on observed non-free voxels, inverse FFT.

        Psi <- sgn(Psi) * sqrt(Iobs) in place (sgn(0) = 0, and much cheaper than complex abs on CPU), with the
        few masked and free voxels saved before and written back (they keep the calculated value).
        torch's FFT with out= is slower on CPU than a fresh result, so FFT outputs are not preallocated.
        """
        psi = torch.fft.fftn(self._obj, norm="ortho")
        if calc_llk:
            self._store_llk(torch.abs(psi))
        flat = psi.view(-1)
        idx = self._free_idx if self.zero_mask else self._unobs_idx  # zero_mask: masked voxels forced to 0
        keep = flat.index_select(0, idx) if idx.numel() else None
        psi.sgn_().mul_(self._sqrt_iobs)
        if keep is not None:
            flat.index_copy_(0, idx, keep)
        return torch.fft.ifftn(psi, norm="ortho")

    def _store_llk(self, amp: torch.Tensor) -> None:
        """Compute normalised LLKs and R-factor from |Psi| (before projection) into self.llk."""
        calc = amp * amp
        iobs = self._iobs
        if self.llk_scale != 1.0:  # Poisson statistics hold for photons, not for normalised intensities
            calc, iobs = calc * self.llk_scale, iobs * self.llk_scale
        sums = _llk.llk_sums(calc, iobs, self._observed, self._free)
        res = _llk.normalise_llk(sums, self.nb_observed, self._nb_support, self.nb_free)
        res["support_size"] = self._nb_support
        res["nb_cycle"] = self.nb_cycle
        self.llk.update(res)
        self.llk_history.append(dict(res))

    def _obj2_out(self, obj: torch.Tensor) -> float:
        """Fraction of sum |obj|^2 lying outside the support."""
        o2 = obj.real ** 2 + obj.imag ** 2
        tot = float(o2.sum(dtype=torch.float64))
        out = float((o2 * (1 - self._support_f)).sum(dtype=torch.float64))
        return out / tot if tot > 0 else 0.0

    def cycle(self, kind: str, beta: float = 0.9, calc_llk: bool = False) -> None:
        """One ER, HIO or RAAR cycle, fused in-place element-wise work (LLK only when calc_llk)."""
        pm = self._project(calc_llk)
        if kind == "ER":
            self._obj = pm.mul_(self._support_f)
        else:
            a, b = self._coefs(kind, beta)
            self._obj.mul_(a).addcmul_(pm, b)
        self.nb_cycle += 1

    def fourier_apply_amplitude(self, calc_llk: bool = False) -> None:
        """obj <- P_M(obj) (no support constraint); records obj2_out when calc_llk."""
        self._obj = self._project(calc_llk)
        if calc_llk:
            self.llk["obj2_out"] = self._obj2_out(self._obj)

    def compute_llk(self) -> dict:
        """LLKs of the current object, and obj2_out after one magnitude projection; the object is unchanged."""
        pm = self._project(calc_llk=True)
        self.llk["obj2_out"] = self._obj2_out(pm)
        return self.get_llk()

    def get_llk(self) -> dict:
        """Last computed LLK dict: llk_poisson(_free), llk_gaussian(_free), llk_euclidian(_free), r_factor,
        obj2_out, support_size, nb_cycle (empty until an LLK operator or calc_llk cycle ran)."""
        return dict(self.llk)

    def smoothed_modulus(self, sigma: float) -> torch.Tensor:
        """|obj| convolved (periodically, through a real FFT) by the sampled Gaussian kernel of std sigma voxels,
        truncated at 4 sigma and normalised: scipy.ndimage.gaussian_filter's kernel, as PyNX's CPU back-end."""
        a = torch.abs(self._obj)
        if sigma <= 0:
            return a
        fa = torch.fft.rfftn(a)
        g = None
        radius = int(4.0 * sigma + 0.5)
        j = np.arange(-radius, radius + 1)
        w = np.exp(-0.5 * (j / sigma) ** 2)
        w /= w.sum()
        for axis, n in enumerate(self.shape):
            kern = np.zeros(n)
            np.add.at(kern, j % n, w)
            tf = np.fft.rfft(kern).real if axis == len(self.shape) - 1 else np.fft.fft(kern).real
            shape = [1] * len(self.shape)
            shape[axis] = tf.size
            gi = torch.from_numpy(tf.astype(np.float32)).to(self.device).reshape(shape)
            g = gi if g is None else g * gi
        return torch.fft.irfftn(fa * g, s=self.shape)

    def border_band(self, n: int, support: torch.Tensor | None = None) -> torch.Tensor:
        """Voxels within n of the support border: dilate_n(S) & ~erode_n(S), (2n+1)^3 box, periodic."""
        s = self._support if support is None else support
        return dilate_box(s, n) & dilate_box(~s, n)


def dilate_box(mask: torch.Tensor, n: int) -> torch.Tensor:
    """Binary dilation by a (2n+1)^3 box with periodic boundaries (separable: OR of rolled copies per axis)."""
    out = mask.to(torch.bool)
    for axis in range(out.ndim):
        acc = out.clone()
        for k in range(1, n + 1):
            acc |= torch.roll(out, k, axis)
            acc |= torch.roll(out, -k, axis)
        out = acc
    return out
