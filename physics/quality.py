"""Quality gate of a reconstruction, computed from the data alone (no ground truth): is this result to be trusted?

Signals (each one the field already uses, here on one footing):
- free Poisson LLK and obj2_out (PyNX's run selection and its nb_run_keep_max_obj2_out rejection);
- support size against the autocorrelation bound: the autocorrelation of a compact object is supported on the
  object's difference set, about 8x (centro-symmetric convex) to 20x (any convex body) its volume, so a support
  that fills a large fraction of the thresholded autocorrelation has grown into the noise, and a tiny one collapsed;
- amplitude homogeneity inside the support: our `mean_to_max` (1 - mean/max of |obj| over the support, lower is
  more homogeneous, in the spirit of cdiutils' mean_to_max) and a normalised `sharpness` N_S sum|a|^4/(sum|a|^2)^2
  (1 for a flat amplitude; cohere and cdiutils rank runs by sum|a|^4);
- reciprocal-space error `chi` (free R-factor, as cohere's chi);
- agreement of two independent candidates after twin / sub-voxel shift / phase-offset alignment
  (1 - normalised |<a, b>|, the idea behind PyNX's first-mode weight).

`gate_values` measures, `judge` decides with `GateThresholds` (calibrated by bench/calibrate_gate.py).
Pure array code: numpy, physics.align and the engine's LLK through physics.metrics.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from physics.align import align
from physics.errors import InputError
from physics.shape import crystal_shape


@dataclass
class GateThresholds:
    """Limits of an 'ok' reconstruction. Defaults chosen by bench/calibrate_gate.py on 80 simulated crystals (seeds
    outside the evaluation's; 412 candidates, the adaptive strategy's own fallback runs among them), by a rule
    fixed before it was applied: single-candidate checks, at the highest precision floor (100, 99, 98 ... 95 %)
    whose best setting keeps recall >= 90 %: the 97 % floor, in sample precision 97.3 %, recall 91.1 %
    (docs/benchmarks.md, 'Quality gate calibration'; on its first 53 crystals, with the autocorrelation bound of
    before 2026-12-07, the rule had picked obj2_out <= 0.02 at the 98 % floor). Those records scored IoU on the
    phasing support; recomputed on 2026-12-08 with IoU on the crystal's shape, the rule keeps the 97 % floor with
    free LLK <= 117 and no support-ratio limits, which the adaptive replay of both calibration sets does not favour
    (one right crystal fewer ok, none wrong either way): not shipped (docs/benchmarks.md says why); the shipped gate
    there: precision 100 %, recall 89.3 % per candidate. obj2_out and mean_to_max do most of
    the work; free LLK separates little (some right results of bright, strongly strained crystals sit above 100),
    so its limit only rejects gross failures (200; the grid's 167 rounded, same verdicts).

    Confirmation zone: between the 100 % floor (mean_to_max <= 0.48, every other limit as above: recall 85 %) and
    the shipped limit 0.55, where the calibration's and the held-out sets' wrong 'ok' results lie (mean_to_max
    0.48-0.54), a candidate is 'ok' only when a candidate from another start agrees with it (mismatch <= 0.12; in
    sample precision 100 %, recall 88.6 %, against 97.3 % / 91.1 % without the zone).
    The strategy then runs fallback runs until one agrees or one passes below the zone. `require_agreement`
    (every candidate needs a partner) costs at least one more run on every dataset: available, not the default,
    except on a pattern the front end reports truncated (for_pattern), which lies outside this calibration."""

    max_llk_free: float = 200.0  # free Poisson LLK (~1 for a statistically ideal fit)
    max_obj2_out: float = 0.05  # fraction of |obj|^2 outside the support after a magnitude projection (PyNX 0.10)
    obj2_out_noise_weight: float = 0.5  # obj2_out is judged less this share of obj2_out_noise (what photon noise
    # alone puts outside the support, photon_noise_fraction): on faint patterns (peak ~1e3 photons, or a background)
    # right and wrong candidates alike sit at 0.06-0.10, noise, not a wrong support. 0.5, 0.7 and 1.0 give the same
    # verdicts on both calibration sets (wide: 3 more crystals ok, none wrong; paper families: none changes); 0.5
    # is the most conservative (the candidates' obj2_out is 0.6-0.7x the estimate there). 0: the limit as before.
    min_support_ratio: float = 0.05  # support size / autocorrelation support size (1e-3 of max; ~1/8 expected)
    max_support_ratio: float = 0.25
    max_mean_to_max: float = 0.55  # 1 - mean/max of |obj| in the support: failed runs have patchy amplitudes
    max_mismatch: float = 0.12  # 1 - normalised correlation with an agreeing candidate, after alignment: the
    # calibration's right independent pairs have a median of 0.02 (90 % below 0.105); the largest limit of the
    # zone's rule (bench.calibrate_gate.confirm_zone_choice) that keeps it free of wrong 'ok's; at 0.15 one agrees
    confirm_mean_to_max: float | None = 0.48  # the confirmation zone: a candidate that passes the single checks
    # with mean_to_max above this is 'ok' only when an independent candidate (another start) agrees with it; 0.48 is
    # the largest limit at which the calibration has no wrong candidate passing (bench.calibrate_gate
    # .confirm_zone_choice, on a 0.01 grid); None: no zone
    require_agreement: bool = False
    independent_partners: bool = False  # agreement only counts between candidates of different starts (groups)
    amplitude_on: str = "support"  # where max_mean_to_max and the zone's edge apply: 'support' (mean_to_max, over
    # the phasing support) or 'shape' (mean_to_max_shape, over the crystal's shape, physics.shape: without the
    # border slack of a loose support, which raises mean_to_max on right results of small or faint crystals)

    def __post_init__(self):
        if not self.max_llk_free > 0 or not 0 < self.max_obj2_out <= 1:
            raise InputError(f"gate limits must be positive: max_llk_free {self.max_llk_free}, "
                             f"max_obj2_out {self.max_obj2_out}")
        if not 0 <= self.min_support_ratio < self.max_support_ratio:
            raise InputError(f"support ratio range must satisfy 0 <= min < max, got "
                             f"{self.min_support_ratio}, {self.max_support_ratio}")
        if not 0 < self.max_mismatch <= 1:
            raise InputError(f"max_mismatch must be in (0, 1], got {self.max_mismatch}")
        if self.confirm_mean_to_max is not None and not 0 <= self.confirm_mean_to_max <= 1:
            raise InputError(f"confirm_mean_to_max must be in [0, 1] or None, got {self.confirm_mean_to_max}")
        if not 0 <= self.obj2_out_noise_weight <= 1:
            raise InputError(f"obj2_out_noise_weight must be in [0, 1], got {self.obj2_out_noise_weight}")
        if self.amplitude_on not in ("support", "shape"):
            raise InputError(f"amplitude_on must be 'support' or 'shape', got {self.amplitude_on!r}")

    @property
    def amplitude_key(self) -> str:
        """The gate value the mean_to_max limits apply to."""
        return "mean_to_max" if self.amplitude_on == "support" else "mean_to_max_shape"

    def mean_to_max(self, values: dict) -> float:
        """The judged mean_to_max of one candidate's gate values (NaN when not recorded: the check then fails)."""
        v = values.get(self.amplitude_key)
        return float("nan") if v is None else float(v)

    def in_confirm_zone(self, values: dict) -> bool:
        """True when a candidate that passes the single checks still needs an independent candidate to agree."""
        z = self.confirm_mean_to_max
        return z is not None and self.mean_to_max(values) > z

    def for_pattern(self, truncated: bool) -> "GateThresholds":
        """The limits for one pattern. A truncated pattern (still bright at the ends of the array: a cut scan, which
        the front end reports) lies outside the calibration, and there a wrong result passed every single check
        (bench.cnn_eval, 128x256x256, seed 2000221: free LLK 112, phase RMSE 0.68 rad): an 'ok' then needs an
        independent start that agrees (require_agreement with independent_partners)."""
        return replace(self, require_agreement=True, independent_partners=True) if truncated else self

    def as_dict(self) -> dict:
        return asdict(self)


def autocorrelation_support_size(iobs: np.ndarray, mask: np.ndarray | None = None, threshold: float = 1e-3,
                                 photon_scale: float = 1.0) -> int:
    """Voxels of |FFT(Iobs)| above threshold x max and above the Poisson noise floor (masked voxels extrapolated
    from the measured ones first, by physics.oversampling.fill_compact): the autocorrelation bound.

    At 1e-3 it is 7-9x the true crystal volume on simulated 64³ crystals (phase range 2-11 rad; the theory gives
    8x for a centro-symmetric convex body); PyNX's initial-support threshold 0.1 keeps only the strong core of a
    strained crystal's autocorrelation (0.1-3x the volume), too small to bound anything.
    Masked voxels are filled, not zeroed: a zeroed bad pixel near the Bragg peak is a negative spike whose
    transform is a flat floor at its intensity / the total, above 1e-3 of the maximum for a bright one; with 0.1 %
    isolated bad pixels the bound grew 5-40x, the support ratio fell to 0.005-0.03, and right reconstructions
    were marked uncertain (bench.adaptive_eval --crystals wide, 2026-12-07). A local mean cannot bridge a detector
    gap through the peak either: the bound grew 2.0x (median; up to 10.6x) on gapped patterns, and right results of
    the wide calibration fell below the support-ratio floor; since 2026-12-08 masked voxels are extrapolated from
    the autocorrelation's compactness (fill_compact: 0.66-1.16x the bound of the same data with the gap measured).
    Noise floor: Poisson noise is white, so every Fourier coefficient of it has a variance of N, the total photon
    count, and |coefficient| exceeds t with probability exp(-t²/N); at t = sqrt(N ln n_voxels) about one voxel of
    noise is expected above it. Below about 1e7 photons in all (peak ~1e5 at 64³) that floor lies above 1e-3 of
    the maximum, and the bound filled with noise (the support ratio of right results fell to 0.04 at 1.3e6
    photons, to 0.005-0.01 at 1e5). photon_scale: photons per intensity unit (physics.preprocess.photon_scale)."""
    if not photon_scale > 0:
        raise InputError(f"photon scale must be > 0, got {photon_scale}")
    i = np.asarray(iobs, dtype=np.float64)
    if mask is not None and np.any(mask):
        from physics.oversampling import fill_compact

        i = fill_compact(i, np.asarray(mask, bool)).astype(np.float64)
    ac = np.abs(np.fft.fftn(i))
    if not ac.max() > 0:
        raise InputError("the intensity is zero everywhere: no autocorrelation bound")
    noise = np.sqrt(max(float(i.sum()), 0.0) * np.log(i.size) / photon_scale)
    return int((ac > max(threshold * ac.max(), noise)).sum())


def amplitude_metrics(obj: np.ndarray, support: np.ndarray) -> dict:
    """mean_to_max (1 - mean/max of |obj| in the support) and normalised sharpness N_S sum a^4 / (sum a^2)^2."""
    s = np.asarray(support, bool)
    a = np.abs(np.asarray(obj))[s].astype(np.float64)
    if a.size == 0 or not a.max() > 0:
        return {"mean_to_max": 1.0, "sharpness": float("inf")}
    a2 = a * a
    return {"mean_to_max": float(1.0 - a.mean() / a.max()),
            "sharpness": float(a.size * (a2 * a2).sum() / a2.sum() ** 2)}


def agreement(a: np.ndarray, b: np.ndarray, upsample: int = 10) -> float:
    """Mismatch of two candidates after twin / sub-voxel shift / constant-phase alignment: 1 - |<a,b>|/(|a||b|),
    0 for identical solutions (up to the ambiguities of phase retrieval), ~1 for unrelated ones."""
    if not np.any(a) or not np.any(b):
        return 1.0
    _, info = align(np.asarray(a), np.asarray(b), upsample=upsample)
    return float(info["mismatch"])


_NOISE_LAMBDA = np.concatenate([[0.0], np.logspace(-6, 4, 201)])  # the table's Poisson means, photons
_NOISE_MSE = None  # E[(sqrt(X) - sqrt(lambda))^2], X ~ Poisson(lambda), on _NOISE_LAMBDA (filled on first use)


def _sqrt_poisson_mse() -> np.ndarray:
    global _NOISE_MSE
    if _NOISE_MSE is None:
        from scipy.special import gammaln

        out = []
        for lam in _NOISE_LAMBDA:
            k = np.arange(int(lam + 12 * np.sqrt(lam) + 30) + 1)
            p = np.exp(k * np.log(max(lam, 1e-300)) - lam - gammaln(k + 1)) if lam > 0 else (k == 0).astype(float)
            out.append(float(np.sum(p * (np.sqrt(k) - np.sqrt(lam)) ** 2)))
        _NOISE_MSE = np.array(out)
    return _NOISE_MSE


def photon_noise_fraction(iobs: np.ndarray, mask: np.ndarray | None = None, photon_scale: float = 1.0) -> float:
    """The share of a magnitude projection's energy that photon noise alone brings in, from the data alone:
    sum over measured voxels of E[(sqrt(X) - sqrt(lambda))^2] for X ~ Poisson(lambda) (1/4 photon for a bright
    voxel, about 2 lambda for a faint one), lambda the data smoothed over 1 voxel (a speckle spans 2 or more at
    oversampling >= 2), over the measured photons. Noise is spread over the whole array, so a support of n_s of N
    voxels has about (1 - n_s / N) of it outside: gate_values' obj2_out_noise. At 64³: below 1e-3 for a
    1e6-photon peak, about 0.05 for a 1e3-photon one, 0.1-0.15 with a background of 0.1-0.2 photon per voxel as
    well (bench.calibrate_gate wide crystals). photon_scale: photons per unit."""
    from scipy.ndimage import gaussian_filter

    if not photon_scale > 0:
        raise InputError(f"photon scale must be > 0, got {photon_scale}")
    i = np.asarray(iobs, dtype=np.float64) * photon_scale
    seen = np.ones(i.shape, bool) if mask is None else ~np.asarray(mask, bool)
    total = float(i[seen].sum())
    if not total > 0:
        raise InputError("the intensity is zero everywhere: no photon noise estimate")
    w = seen.astype(np.float64)
    lam = gaussian_filter(i * w, 1.0, mode="wrap") / np.maximum(gaussian_filter(w, 1.0, mode="wrap"), 1e-6)
    mse = np.interp(np.maximum(lam[seen], 0.0), _NOISE_LAMBDA, _sqrt_poisson_mse(), right=0.25)
    return float(mse.sum() / total)


def gate_values(obj: np.ndarray, support: np.ndarray, iobs: np.ndarray, mask: np.ndarray | None = None,
                free_mask: np.ndarray | None = None, llk: dict | None = None, ac_size: int | None = None,
                noise_fraction: float | None = None) -> dict:
    """Everything the gate looks at for one candidate, from the data alone.

    llk: the candidate's LLK dict (llk_poisson, llk_poisson_free, obj2_out, r_factor_free) if already known;
    otherwise computed here with the engine's LLK (physics.metrics.data_metrics) on the same free voxels.
    ac_size: autocorrelation support size, if already computed for these data; noise_fraction: likewise
    photon_noise_fraction (in photons: pass it when the data are not in photon counts).
    """
    support = np.asarray(support, bool)
    if llk is None or llk.get("llk_poisson_free") is None or llk.get("obj2_out") is None:
        from physics.metrics import data_metrics

        llk = data_metrics(obj, iobs, mask=mask, free_mask=free_mask, support=support)
    if ac_size is None:
        ac_size = autocorrelation_support_size(iobs, mask)
    if noise_fraction is None:
        noise_fraction = photon_noise_fraction(iobs, mask)
    n_s = int(support.sum())
    return {"llk": float(llk.get("llk_poisson", float("nan"))),
            "llk_free": float(llk.get("llk_poisson_free", float("nan"))),
            "obj2_out": float(llk.get("obj2_out", float("nan"))),
            "obj2_out_noise": obj2_out_noise(noise_fraction, n_s, support.size),
            "chi": float(llk.get("r_factor_free", float("nan"))),
            "support_size": n_s, "support_ratio": n_s / max(ac_size, 1),
            **amplitude_metrics(obj, support),
            # the same on the crystal's shape (physics.shape), without the support's border slack that inflates
            # mean_to_max on small crystals (judged instead of mean_to_max when GateThresholds.amplitude_on is 'shape')
            **{f"{k}_shape": v for k, v in
               amplitude_metrics(obj, crystal_shape(obj, support) if n_s else support).items()}}


def obj2_out_noise(noise_fraction: float, support_size: int, size: int) -> float:
    """The part of obj2_out that photon noise alone explains: the noise share outside a support of support_size of
    size voxels (photon_noise_fraction x (1 - support_size / size))."""
    return float(noise_fraction) * (1.0 - support_size / max(size, 1))


def single_checks(values: dict, thr: GateThresholds) -> list[str]:
    """Reasons why one candidate fails on its own (empty list: it passes the single-candidate checks)."""
    why = []
    lf = values.get("llk_free", float("nan"))
    if lf is None:
        lf = float("nan")
    if not np.isfinite(lf) or lf > thr.max_llk_free:
        why.append(f"free LLK {lf:.3g} > {thr.max_llk_free:g}")
    o2 = values.get("obj2_out", float("nan"))
    if o2 is None:
        o2 = float("nan")
    noise = thr.obj2_out_noise_weight * float(values.get("obj2_out_noise") or 0.0)
    if not np.isfinite(o2) or o2 - noise > thr.max_obj2_out:
        why.append(f"obj2_out {o2:.3g} > {thr.max_obj2_out:g}"
                   + (f" + {noise:.3g} (photon noise)" if noise else ""))
    mm = thr.mean_to_max(values)
    if not mm <= thr.max_mean_to_max:
        why.append(f"{thr.amplitude_key} {mm:.3g} > {thr.max_mean_to_max:g}")
    r = values.get("support_ratio", float("nan"))
    if not thr.min_support_ratio <= r <= thr.max_support_ratio:
        why.append(f"support / autocorrelation {r:.3g} outside [{thr.min_support_ratio:g}, "
                   f"{thr.max_support_ratio:g}]")
    return why


def needs_partner(values: dict, thr: GateThresholds) -> bool:
    """Whether a candidate that passes the single checks must also agree with another: always when
    thr.require_agreement, else only in the confirmation zone."""
    return thr.require_agreement or thr.in_confirm_zone(values)


def judge(values: dict, thr: GateThresholds, mismatch: float | None = None) -> tuple[str, list[str]]:
    """'ok' or 'uncertain' for one candidate, with the reasons. mismatch: its smallest mismatch with another
    candidate that passes the single checks (an independent one in the confirmation zone; None: no such
    candidate), needed when needs_partner says so."""
    why = single_checks(values, thr)
    if not why and needs_partner(values, thr):
        zone = "agreement required: " if thr.require_agreement else (
            f"{thr.amplitude_key} {thr.mean_to_max(values):.3g} > {thr.confirm_mean_to_max:g} needs confirmation: ")
        if mismatch is None:
            why.append(zone + "no second candidate to agree with")
        elif not mismatch <= thr.max_mismatch:
            why.append(zone + f"mismatch with the other candidates {mismatch:.3g} > {thr.max_mismatch:g}")
    return ("ok" if not why else "uncertain"), why


def judge_set(objs: list, values: list[dict], thr: GateThresholds, mismatch_cache: dict | None = None,
              upsample: int = 10, groups: list | None = None) -> list[dict]:
    """Judge every candidate of one dataset: single checks, then agreement with the others that pass them.

    objs: candidate objects (same grid), or None to use the mismatches in mismatch_cache only; values: their
    gate_values. mismatch_cache maps (i, j), i < j, to a mismatch already computed (filled in place, so repeated
    calls while candidates are added stay cheap).
    groups: one label per candidate naming its start (e.g. "cnn" for every candidate refined from the CNN's
    object); with thr.independent_partners, a partner must come from another group, since two refinements of
    one wrong start can agree with each other.
    A candidate in the confirmation zone always needs a partner of another group.
    Returns one dict per candidate: status, reasons, mismatch (with its best single-passing partner, or None).
    """
    cache = {} if mismatch_cache is None else mismatch_cache
    passing = [not single_checks(v, thr) for v in values]
    out = []
    for i, v in enumerate(values):
        best = None
        if passing[i] and needs_partner(v, thr):
            independent = thr.independent_partners or thr.in_confirm_zone(v)  # the zone asks another start
            for j in range(len(values)):
                if j == i or not passing[j]:
                    continue
                if independent and groups is not None and groups[i] == groups[j]:
                    continue
                key = (min(i, j), max(i, j))
                if key not in cache:
                    if objs is None:  # recorded mismatches only (the calibration's replay): a pair not recorded
                        continue
                    cache[key] = agreement(objs[key[0]], objs[key[1]], upsample=upsample)
                best = cache[key] if best is None else min(best, cache[key])
        status, why = judge(v, thr, best)
        out.append({"status": status, "reasons": why, "mismatch": best})
    return out
