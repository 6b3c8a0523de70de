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


def resolve_device(device="auto") -> torch.device:
    """Turn "auto"/"cpu"/"cuda"/"cuda:1"/torch.device into a torch.device; "auto" is CUDA when present, else CPU.

    Refuses CUDA when none is present and any other device type (tpu, mps, ...) with a one-line InputError.
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but no CUDA device is available (use --device auto or cpu)")
    return dev


def device_name(device) -> str:
    """A readable name of a device for summaries and metadata: 'cpu' or 'cuda:0 (NVIDIA H200)'."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return "cpu"


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


DIMS = (-3, -2, -1)  # the three spatial axes; a batched state has a leading run axis
#: an ER cycle copies only the support voxels back (instead of multiplying the whole array) below this fraction
SPARSE_SUPPORT_FRACTION = 0.25
#: the magnitude projection works on the observed voxels with Iobs > 0 only (gathered, projected and written into a
#: persistent Fourier buffer that stays 0 elsewhere) when they are under this fraction of the array
SPARSE_DATA_FRACTION = 0.5


class CDI:
    """Coherent diffraction imaging state: iobs, mask, free mask, object and support (PyNX-like).

    iobs: centred 3D intensity (counts, >= 0 where not masked); mask: centred bool, True = masked voxel;
    obj: centred complex starting object (default: ones); support: centred bool (default: whole array).
    batch=B (or a 4D obj/support): B independent runs on the same data in one tensor with a leading run axis;
    getters then return (B, *shape) arrays, LLKs and support thresholds are per run (lists), and a run whose
    support diverges is recorded in `failed` (run index -> exception) and left running instead of raising.
    """

    def __init__(self, iobs, mask=None, obj=None, support=None, device="cpu", free_mask=None, batch=None):
        iobs = _check_array("iobs", iobs)
        if np.iscomplexobj(iobs):
            raise InputError("iobs must be real intensities, got a complex array")
        self.shape = tuple(iobs.shape)
        self.device = resolve_device(device)
        for a in (obj, support):
            if a is not None and np.ndim(a) == 4:
                if batch is not None and np.shape(a)[0] != batch:
                    raise InputError(f"batch={batch} but a start has {np.shape(a)[0]} runs")
                batch = int(np.shape(a)[0])
        if batch is not None and int(batch) < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        self.batch = None if batch is None else int(batch)
        self._lead = () if self.batch is None else (self.batch,)
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
            self._support = torch.ones(self._lead + self.shape, dtype=torch.bool, device=self.device)
        else:
            self._support = self._expand(self._to_internal(self._check_start("support", support).astype(bool),
                                                           torch.bool))
        if obj is None:
            self._obj = torch.ones(self._lead + self.shape, dtype=torch.complex64, device=self.device)
        else:
            obj = self._check_start("obj", obj).astype(np.complex64)
            self._obj = self._expand(self._to_internal(obj, torch.complex64)).contiguous()
        self.nb_cycle = 0
        self.zero_mask = False  # True: masked voxels are set to 0 by the projection instead of left free (PyNX)
        self.llk: dict | list = {} if self.batch is None else [{} for _ in range(self.batch)]
        self.support_threshold: float | list | None = None
        self.llk_scale = 1.0  # photons per intensity unit: LLKs are computed on iobs x llk_scale (non-integer data)
        self.history: list[dict] = []  # one entry per support update
        self.llk_history: list = []  # one entry per LLK computation (calc_llk cycles, LLK operator)
        self.failed: dict = {}  # batched runs whose support diverged: run index -> SupportTooSmall/Large
        self.cycle_hooks: list = []  # callables hook(cdi) run before every cycle (cancellation)
        self.after_cycle_hooks: list = []  # callables hook(cdi) run after every cycle (progress)
        self._clean = False  # True when the object is known to be 0 outside the support (after an ER cycle)
        self._update_fourier_cache()
        self._update_support_cache()
        if free_mask is not None:
            self.set_free_mask(free_mask)

    # ---------------------------------------------------------------- conversions
    def _check_start(self, name, a) -> np.ndarray:
        """Validate an object/support start: 3D of the data shape, or (batch, *shape) for a batched state."""
        a = np.asarray(a)
        if a.ndim == 4 and self.batch is not None:
            if a.shape != self._lead + self.shape:
                raise InputError(f"{name} has shape {a.shape}, expected {self._lead + self.shape}")
            if (np.iscomplexobj(a) or np.issubdtype(a.dtype, np.floating)) and not np.all(np.isfinite(a)):
                raise InputError(f"{name} contains NaN or infinite values")
            return a
        return _check_array(name, a, self.shape)

    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        """A 3D tensor repeated over the runs of a batched state (a copy); 4D or unbatched: unchanged."""
        if self.batch is not None and t.ndim == 3:
            return t.unsqueeze(0).expand(self._lead + self.shape).clone()
        return t

    def _to_internal(self, a: np.ndarray, dtype) -> torch.Tensor:
        """Centred numpy -> fft-shifted tensor on the device (last three axes)."""
        return torch.from_numpy(np.ascontiguousarray(np.fft.ifftshift(a, axes=DIMS))).to(device=self.device,
                                                                                          dtype=dtype)

    @staticmethod
    def _to_centred(t: torch.Tensor) -> np.ndarray:
        """fft-shifted tensor -> centred numpy copy (last three axes)."""
        return np.fft.fftshift(t.detach().cpu().numpy(), axes=DIMS)

    def runs(self, t: torch.Tensor) -> list:
        """Per-run views of an internal (batch, *shape) tensor; [t] for an unbatched state."""
        return [t] if self.batch is None else list(t.unbind(0))

    def _per_run(self, values: list):
        """One value for an unbatched state, the list for a batched one."""
        return values[0] if self.batch is None else values

    # ---------------------------------------------------------------- getters / setters (centred numpy)
    def get_obj(self) -> np.ndarray:
        """Current object, centred, complex64 ((batch, *shape) when batched)."""
        return self._to_centred(self._obj)

    def set_obj(self, obj) -> None:
        """Replace the object (centred complex array of the data shape, or (batch, *shape))."""
        obj = self._check_start("obj", obj).astype(np.complex64)
        self._obj = self._expand(self._to_internal(obj, torch.complex64)).contiguous()
        self._clean = False

    def get_support(self) -> np.ndarray:
        """Current support, centred bool."""
        return self._to_centred(self._support)

    def set_support(self, support) -> None:
        """Replace the support (centred bool array of the data shape, or (batch, *shape))."""
        s = self._check_start("support", support).astype(bool)
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
    def nb_support(self):
        """Number of voxels in the support (a list, one per run, when batched)."""
        return self._per_run(self._nb_support)

    # ---------------------------------------------------------------- caches
    def _update_fourier_cache(self) -> None:
        """Precompute what the magnitude projection needs: sqrt(Iobs) and the indices of masked/free voxels."""
        self._observed = ~self._mask & ~self._free  # voxels whose amplitude is imposed
        self._sqrt_iobs = torch.sqrt(self._iobs)
        self._sqrt_iobs_r = self._sqrt_iobs.unsqueeze(-1)  # broadcasts over view_as_real's (re, im) axis
        self._unobs_idx = torch.nonzero(~self._observed.reshape(-1)).reshape(-1)
        self._free_idx = torch.nonzero(self._free.reshape(-1)).reshape(-1)
        self.nb_observed = int((~self._mask).sum())
        self.nb_free = int(self._free.sum())
        lit = (self._observed & (self._iobs > 0)).reshape(-1)
        if int(lit.sum()) < SPARSE_DATA_FRACTION * lit.numel():
            self._lit_idx = torch.nonzero(lit).reshape(-1)
            self._lit_sqrt_r = self._sqrt_iobs.reshape(-1).index_select(0, self._lit_idx).unsqueeze(-1)
        else:
            self._lit_idx = None
        self._mask_idx = torch.nonzero(self._mask.reshape(-1)).reshape(-1)
        self._fourier_buf = None  # persistent projection output of the sparse path (per state, never shared)

    def _update_support_cache(self) -> None:
        """Precompute float versions of the support used by ER/HIO/RAAR, and its voxel indices when it is small."""
        self._support_f = self._support.to(torch.float32)
        self._support_r = self._support_f.unsqueeze(-1)
        self._nb_support = [int(v) for v in self._support.reshape(-1, self._iobs.numel()).sum(1)]
        total = sum(self._nb_support)
        self._support_idx = (torch.nonzero(self._support.reshape(-1)).reshape(-1)
                             if total < SPARSE_SUPPORT_FRACTION * self._support.numel() else None)
        self._coef_cache: dict = {}
        self._clean = False

    def _set_support_tensor(self, s: torch.Tensor) -> None:
        """Replace the internal support tensor and refresh caches."""
        self._support = self._expand(s.to(torch.bool))
        self._update_support_cache()

    def _coefs(self, kind: str, beta: float):
        """Per-voxel (a, b) with new = a*obj_prev + b*P_M(obj): HIO a=~S, b=S-beta~S; RAAR a=beta~S, b=S+(1-2beta)~S.
        Shaped (..., 1) to multiply view_as_real tensors."""
        key = (kind, float(beta))
        if key not in self._coef_cache:
            s = self._support_f
            ns = 1 - s
            if kind == "HIO":
                a, b = ns, s - beta * ns
            elif kind == "RAAR":
                a, b = beta * ns, s + (1 - 2 * beta) * ns
            else:
                raise ValueError(f"unknown algorithm {kind}")
            self._coef_cache[key] = (a.unsqueeze(-1), b.unsqueeze(-1))
        return self._coef_cache[key]

    # ---------------------------------------------------------------- kernels
    def _project(self, calc_llk: bool = False) -> torch.Tensor:
        """Return P_M(obj): unitary FFT, |Psi| replaced by sqrt(Iobs) on observed non-free voxels, inverse FFT.

        Psi <- sgn(Psi) * sqrt(Iobs) in place (sgn(0) = 0, and much cheaper than complex abs on CPU; the
        multiplication by the real sqrt(Iobs) on the (re, im) float view, ~3x cheaper than complex x real on CPU),
        with the few masked and free voxels saved before and written back (they keep the calculated value).
        Sparse data (under SPARSE_DATA_FRACTION of the voxels observed with Iobs > 0): _project_sparse instead.
        torch's FFT with out= is slower on CPU than a fresh result, so FFT outputs are not preallocated.
        """
        psi = torch.fft.fftn(self._obj, dim=DIMS, norm="ortho")
        if calc_llk:
            self._store_llk(torch.abs(psi))
        flat = psi.view(-1, self._iobs.numel())  # (runs, voxels)
        idx = self._free_idx if self.zero_mask else self._unobs_idx  # zero_mask: masked voxels forced to 0
        if self._lit_idx is not None:
            return torch.fft.ifftn(self._project_sparse(flat, idx), dim=DIMS, norm="ortho")
        keep = flat.index_select(1, idx) if idx.numel() else None
        psi.sgn_()
        torch.view_as_real(psi).mul_(self._sqrt_iobs_r)
        if keep is not None:
            flat.index_copy_(1, idx, keep)
        return torch.fft.ifftn(psi, dim=DIMS, norm="ortho")

    def _project_sparse(self, flat: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
        """Sparse data (most observed voxels have Iobs = 0, where the projection gives 0): project only the
        observed voxels with Iobs > 0, copy the kept (free / masked) ones, into a buffer that is 0 elsewhere."""
        buf = self._fourier_buf
        if buf is None or buf.shape[:-3] != self._obj.shape[:-3]:
            buf = self._fourier_buf = torch.zeros_like(self._obj)
            self._fourier_buf_zero_mask = True
        bflat = buf.view(-1, self._iobs.numel())
        if self.zero_mask and not self._fourier_buf_zero_mask and self._mask_idx.numel():
            bflat.index_fill_(1, self._mask_idx, 0)  # masked voxels kept before: now forced to 0
        self._fourier_buf_zero_mask = bool(self.zero_mask)
        lit = self._all_runs("lit", self._lit_idx)  # 1D indices into the whole tensor: take/put are fastest
        v = torch.take(flat, lit).view(-1, self._lit_idx.numel())
        v.sgn_()
        torch.view_as_real(v).mul_(self._lit_sqrt_r)
        buf.put_(lit, v.view(-1))
        if keep_idx.numel():
            bflat.index_copy_(1, keep_idx, flat.index_select(1, keep_idx))
        return buf

    def _all_runs(self, key: str, idx: torch.Tensor) -> torch.Tensor:
        """Voxel indices of one 3D array repeated for every run, as indices into the flattened (runs, voxels)."""
        if self.batch is None:
            return idx
        cache = self.__dict__.setdefault("_run_idx_cache", {})
        if cache.get(key, (None,))[0] is not idx:
            n = self._iobs.numel()
            offsets = torch.arange(self.batch, device=idx.device).unsqueeze(1) * n
            cache[key] = (idx, (idx.unsqueeze(0) + offsets).reshape(-1))
        return cache[key][1]

    def _store_llk(self, amp: torch.Tensor) -> None:
        """Compute normalised LLKs and R-factor from |Psi| (before projection) into self.llk (per run if batched)."""
        out = []
        for a, nb_sup in zip(self.runs(amp), self._nb_support):
            calc = a * a
            iobs = self._iobs
            if self.llk_scale != 1.0:  # Poisson statistics hold for photons, not for normalised intensities
                calc, iobs = calc * self.llk_scale, iobs * self.llk_scale
            sums = _llk.llk_sums(calc, iobs, self._observed, self._free)
            res = _llk.normalise_llk(sums, self.nb_observed, nb_sup, self.nb_free)
            res["support_size"] = nb_sup
            res["nb_cycle"] = self.nb_cycle
            out.append(res)
        if self.batch is None:
            self.llk.update(out[0])
            self.llk_history.append(dict(out[0]))
        else:
            for d, res in zip(self.llk, out):
                d.update(res)
            self.llk_history.append([dict(r) for r in out])

    def _obj2_out(self, obj: torch.Tensor) -> list:
        """Fraction of sum |obj|^2 lying outside the support, per run."""
        out = []
        for o, s in zip(self.runs(obj), self.runs(self._support_f)):
            o2 = o.real ** 2 + o.imag ** 2
            tot = float(o2.sum(dtype=torch.float64))
            outside = float((o2 * (1 - s)).sum(dtype=torch.float64))
            out.append(outside / tot if tot > 0 else 0.0)
        return out

    def _set_obj2_out(self, values: list) -> None:
        if self.batch is None:
            self.llk["obj2_out"] = values[0]
        else:
            for d, v in zip(self.llk, values):
                d["obj2_out"] = v

    def cycle(self, kind: str, beta: float = 0.9, calc_llk: bool = False) -> None:
        """One ER, HIO or RAAR cycle, fused in-place element-wise work (LLK only when calc_llk).

        ER: when the object is already 0 outside a small support, only the support voxels are copied back from
        P_M(obj) (no pass over the whole array); otherwise P_M(obj) is multiplied by the support.
        """
        for hook in self.cycle_hooks:
            hook(self)
        pm = self._project(calc_llk)
        if kind == "ER":
            if self._clean and self._support_idx is not None:
                idx = self._support_idx
                self._obj.put_(idx, torch.take(pm, idx))
            else:
                torch.view_as_real(pm).mul_(self._support_r)
                self._obj = pm
                self._clean = True
        else:
            a, b = self._coefs(kind, beta)
            torch.view_as_real(self._obj).mul_(a).addcmul_(torch.view_as_real(pm), b)
            self._clean = False
        self.nb_cycle += 1
        for hook in self.after_cycle_hooks:
            hook(self)

    def fourier_apply_amplitude(self, calc_llk: bool = False) -> None:
        """obj <- P_M(obj) (no support constraint); records obj2_out when calc_llk."""
        self._obj = self._project(calc_llk)
        self._clean = False
        if calc_llk:
            self._set_obj2_out(self._obj2_out(self._obj))

    def compute_llk(self):
        """LLKs of the current object, and obj2_out after one magnitude projection; the object is unchanged."""
        pm = self._project(calc_llk=True)
        self._set_obj2_out(self._obj2_out(pm))
        return self.get_llk()

    def get_llk(self):
        """Last computed LLK dict: llk_poisson(_free), llk_gaussian(_free), llk_euclidian(_free), r_factor,
        obj2_out, support_size, nb_cycle (empty until an LLK operator or calc_llk cycle ran); one per run if batched."""
        return dict(self.llk) if self.batch is None else [dict(d) for d in self.llk]

    @classmethod
    def stack(cls, states: list) -> "CDI":
        """One batched state from unbatched ones on the same data (same iobs, masks, device): runs in one tensor."""
        first = states[0]
        if first.batch is not None or any(s.batch is not None or s.shape != first.shape for s in states):
            raise ValueError("CDI.stack takes unbatched states of one shape")
        b = object.__new__(cls)
        b.__dict__.update(first.__dict__)
        b.batch, b._lead = len(states), (len(states),)
        b._obj = torch.stack([s._obj for s in states])
        b.llk, b.history, b.llk_history, b.failed = [{} for _ in states], [], [], {}
        b.cycle_hooks, b.after_cycle_hooks = [], []
        b.support_threshold = None
        b._fourier_buf, b._run_idx_cache = None, {}
        b.nb_cycle = max(s.nb_cycle for s in states)
        b._set_support_tensor(torch.stack([s._support for s in states]))
        return b

    def run_state(self, i: int) -> "CDI":
        """Run i of a batched state as an unbatched CDI sharing the data (tensors copied; nothing re-validated)."""
        one = object.__new__(CDI)
        one.__dict__.update({k: v for k, v in self.__dict__.items()
                             if k not in ("_obj", "_support", "llk", "history", "llk_history", "failed",
                                          "cycle_hooks", "after_cycle_hooks")})
        one.batch, one._lead = None, ()
        one._fourier_buf, one._run_idx_cache = None, {}
        one._obj = self._obj[i].clone()
        one.llk, one.history, one.llk_history, one.failed = dict(self.llk[i]), [], [], {}
        one.cycle_hooks, one.after_cycle_hooks = [], []
        one.support_threshold = (self.support_threshold[i] if isinstance(self.support_threshold, list)
                                 else self.support_threshold)
        one._set_support_tensor(self._support[i].clone())
        return one

    def smoothed_modulus(self, sigma: float) -> torch.Tensor:
        """|obj| convolved (periodically, through a real FFT) by the sampled Gaussian kernel of std sigma voxels,
        truncated at 4 sigma and normalised: scipy.ndimage.gaussian_filter's kernel, as PyNX's CPU back-end.
        fft-shifted layout, one per run when batched."""
        a = torch.abs(self._obj)
        if sigma <= 0:
            return a
        fa = torch.fft.rfftn(a, dim=DIMS)
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
        return torch.fft.irfftn(fa * g, s=self.shape, dim=DIMS)

    def border_band(self, n: int, support: torch.Tensor | None = None) -> torch.Tensor:
        """Voxels within n of the support border: dilate_n(S) & ~erode_n(S), (2n+1)^3 box, periodic."""
        s = self._support if support is None else support
        return dilate_box(s, n) & dilate_box(~s, n)


def dilate_box(mask: torch.Tensor, n: int) -> torch.Tensor:
    """Binary dilation by a (2n+1)^3 box with periodic boundaries (separable: OR of rolled copies per axis)."""
    out = mask.to(torch.bool)
    for axis in range(out.ndim - 3, out.ndim):  # the three spatial axes (a leading run axis is left alone)
        acc = out.clone()
        for k in range(1, n + 1):
            acc |= torch.roll(out, k, axis)
            acc |= torch.roll(out, -k, axis)
        out = acc
    return out
