"""What phase_runs needs from an engine, and the built-in (torch) engine.

phase_runs draws every run's start (threshold, autocorrelation threshold, object seed) and the free mask, builds
the schedule once (physics.phasing.schedule), and hands them to an `Engine`, which runs the schedule from each
start and returns one `RunOutcome` per run. Selection and modes are shared (multirun.combine_runs). The PyNX
engine (workers.engines.pynx_engine.PyNXEngine) implements the same protocol through a subprocess.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import numpy as np

from physics.errors import InputError
from physics.phasing.cdi import CDI, SupportTooLarge, SupportTooSmall
from physics.phasing.operators import AutoCorrelationSupport, InitObjRandom, ScaleObj, SupportUpdate
from physics.phasing.schedule import Monitor, Schedule, prepare_support_update, to_operator


@dataclass
class PhaseConfig:
    """Settings of a multi-run reconstruction (phase_runs); defaults are PyNX's standard recipe.

    recipe: left-to-right recipe string; nb_run random starts, nb_keep best (free LLK) combined into modes;
    threshold_range: shrink-wrap threshold drawn per run; update_period: support update every K cycles;
    border_n > 0: border-only support updates; method / smooth_width / force_shrink: SupportUpdate's options;
    max_obj2_out: runs with more energy outside the support are rejected; autocorrelation_range: initial support
    threshold drawn per run; free_ratio: free-voxel fraction; max_restart: restarts of a diverging run
    (threshold x/÷ 1.1); upsample: sub-voxel alignment factor; zero_mask: True/False/"auto" (see schedule);
    center: centre the best run on its support; num_threads: torch intra-op threads (None: unchanged; 1 is best on
    a shared busy CPU); batch: runs computed together as one batched tensor by the built-in engine (1: one at a
    time); beta: HIO/RAAR beta.
    """

    recipe: str = "HIO**400,RAAR**1000,ER**300"
    nb_run: int = 20
    nb_keep: int = 5
    threshold_range: tuple = (0.15, 0.40)
    seed: int = 0
    device: str = "cpu"
    update_period: int = 20
    border_n: int = 0
    method: str = "rms"
    smooth_width: tuple = (2.0, 0.5, None)
    force_shrink: bool = False
    max_obj2_out: float = 0.10
    autocorrelation_range: tuple = (0.09, 0.11)
    free_ratio: float = 0.05
    max_restart: int = 5
    upsample: int = 20
    zero_mask: bool | str = False
    center: bool = True
    num_threads: int | None = None
    batch: int = 1
    beta: float = 0.9

    def __post_init__(self):
        if self.nb_run < 1 or self.nb_keep < 1:
            raise InputError(f"nb_run and nb_keep must be >= 1, got {self.nb_run} and {self.nb_keep}")
        lo, hi = self.threshold_range
        if not 0 < lo <= hi:
            raise InputError(f"threshold_range must be 0 < low <= high, got {self.threshold_range}")
        if int(self.batch) < 1:
            raise InputError(f"batch must be >= 1, got {self.batch}")
        if self.zero_mask not in (True, False, "auto"):
            raise InputError(f"zero_mask must be True, False or 'auto', got {self.zero_mask!r}")
        if self.max_restart < 0:
            raise InputError(f"max_restart must be >= 0, got {self.max_restart}")

    def support_update(self, threshold) -> SupportUpdate:
        """The shrink-wrap operator of one run (or of a batch: one threshold per run)."""
        return SupportUpdate(threshold_relative=threshold, method=self.method, smooth_width=self.smooth_width,
                             border_n=self.border_n, force_shrink=self.force_shrink)


@dataclass(frozen=True)
class RunSpec:
    """One run's random draws, made by phase_runs in a fixed order so that every engine starts alike."""

    run: int
    threshold: float
    autocorrelation: float
    obj_seed: int


@dataclass
class RunOutcome:
    """One run's end: centred obj (last iterate) and support, the final (retuned) threshold and restarts;
    llk: our LLK figures of that state when the engine computed them (else phase_runs does); extra: engine
    figures for the run record; error: why the run failed (then obj is None)."""

    run: int
    obj: np.ndarray | None = None
    support: np.ndarray | None = None
    threshold: float | None = None
    restarts: int = 0
    llk: dict | None = None
    extra: dict = field(default_factory=dict)
    error: str | None = None


@dataclass
class Problem:
    """The data every run shares: centred iobs, mask (or None) and free mask, on a device."""

    iobs: np.ndarray
    mask: np.ndarray | None
    free_mask: np.ndarray
    device: str = "cpu"

    def start_state(self, spec: RunSpec) -> CDI:
        """A run's starting state: autocorrelation support, random object inside it, scaled to the data."""
        cdi = CDI(self.iobs, mask=self.mask, device=self.device, free_mask=self.free_mask)
        AutoCorrelationSupport(spec.autocorrelation) * cdi
        ScaleObj("F") * InitObjRandom(seed=spec.obj_seed) * cdi
        return cdi


Progress = Callable[[int, int], None]


class Engine(Protocol):
    """A phasing engine: runs one schedule from each start; yields one RunOutcome per spec (any order)."""

    name: str

    def run(self, problem: Problem, specs: list, sched: Schedule, config: PhaseConfig,
            progress: Progress | None = None, should_cancel=None) -> Iterable[RunOutcome]:
        ...


class BuiltinEngine:
    """The torch engine (CPU or CUDA): the schedule as an operator chain on a CDI state.

    config.batch = B > 1 stacks B runs into one batched state (leading run axis): one FFT call and one
    element-wise pass per cycle for all of them. A run whose support diverges is restarted later from the same
    start with the threshold ÷/x 1.1 (at most config.max_restart times), as in one-at-a-time mode.
    """

    name = "builtin"

    def run(self, problem, specs, sched, config, progress=None, should_cancel=None):
        total = sched.nb_cycles * len(specs)
        queue = deque((spec, spec.threshold, 0) for spec in specs)
        finished = 0

        def report(done, _total):
            if progress is not None:
                progress(min(done, total), total)

        while queue:
            items = [queue.popleft() for _ in range(min(int(config.batch), len(queue)))]
            cdi = CDI.stack([problem.start_state(spec) for spec, _, _ in items])
            sup = prepare_support_update(sched, config.support_update(np.array([t for _, t, _ in items])))
            op = to_operator(sched, sup, config.beta)
            try:
                with Monitor(cdi, total, report, should_cancel, runs=len(items), offset=finished * sched.nb_cycles):
                    op * cdi
            except (SupportTooSmall, SupportTooLarge):
                pass  # every run of the batch diverged; cdi.failed says how
            finally:
                cdi.zero_mask = False
            retry = []
            for i, (spec, thr, attempt) in enumerate(items):
                exc = cdi.failed.get(i)
                if exc is None:
                    one = cdi.run_state(i)
                    llk = one.compute_llk()
                    threshold = one.support_threshold if one.support_threshold is not None else thr
                    finished += 1
                    yield RunOutcome(spec.run, obj=one.get_obj(), support=one.get_support(), threshold=threshold,
                                     restarts=attempt, llk=llk)
                    continue
                thr = thr / 1.1 if isinstance(exc, SupportTooSmall) else thr * 1.1
                if attempt < config.max_restart:
                    retry.append((spec, thr, attempt + 1))
                else:
                    finished += 1
                    yield RunOutcome(spec.run, restarts=attempt, error=str(exc).splitlines()[0])
            queue.extendleft(reversed(retry))  # restarts go first, as one-at-a-time runs restart at once
