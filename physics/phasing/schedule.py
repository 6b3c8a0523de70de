"""The one phasing schedule: recipe + support-update period + zero_mask rule -> segments, for every engine.

A segment is (name, n, zero_mask): n consecutive steps of one kind ("ER", "HIO", "RAAR", "Sup", "FAA", "LLK"),
zero_mask telling whether masked Fourier voxels are forced to 0 during those cycles. Both engines run these
segments: the built-in one as a chain of operators (`to_operator`), PyNX's as its own operator chain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from physics.errors import InputError
from physics.phasing.recipe import parse_recipe

CYCLES = ("ER", "HIO", "RAAR")
#: zero_mask="auto" forces masked voxels to 0 during this fraction of the HIO/RAAR cycles (PyNX's BCDI runner)
AUTO_ZERO_FRACTION = 0.6


class Segment(NamedTuple):
    """n consecutive steps `name`; zero_mask applies to cycle steps only."""

    name: str
    n: int
    zero_mask: bool = False


@dataclass(frozen=True)
class Schedule:
    """The segments of one recipe, and its cycle counts (for progress and the smoothing schedule)."""

    recipe: str
    segments: tuple
    nb_cycles: int  # ER + HIO + RAAR cycles
    nb_hio_raar: int  # HIO + RAAR cycles: the length of a (begin, end, None) smoothing schedule
    explicit_sup: bool  # the recipe names Sup itself (then no periodic updates are inserted)

    def as_lists(self) -> list:
        """Segments as JSON-friendly [name, n, zero_mask] lists (the PyNX child's input)."""
        return [[s.name, s.n, bool(s.zero_mask)] for s in self.segments]


def schedule(recipe: str, update_period: int | None = 20, zero_mask=False, support_update: bool = True,
             has_mask: bool = True) -> Schedule:
    """Expand a recipe into segments, left to right.

    Periodic support updates: a "Sup" step after every update_period-th cycle (counted from the recipe's start),
    unless the recipe names Sup itself, support_update is False or update_period is 0/None.
    zero_mask: True / False for every cycle, or "auto": True during the first 60 % of the HIO/RAAR cycles, False
    afterwards and in ER. has_mask=False (nothing masked) drops zero_mask, since it then changes nothing.
    """
    if zero_mask not in (True, False, "auto"):
        raise InputError(f"zero_mask must be True, False or 'auto', got {zero_mask!r}")
    if update_period is not None and int(update_period) < 0:
        raise InputError(f"update_period must be >= 0, got {update_period}")
    steps = parse_recipe(recipe)
    explicit = "Sup" in steps
    period = int(update_period or 0) if support_update and not explicit else 0
    nb_hio_raar = sum(s in ("HIO", "RAAR") for s in steps)
    zero_until = int(AUTO_ZERO_FRACTION * nb_hio_raar) if zero_mask == "auto" else 0
    segments: list[list] = []
    cycles = hio_raar = 0
    for name in steps:
        zero = False
        if name in CYCLES and has_mask:
            hio_raar += name != "ER"
            zero = (hio_raar <= zero_until and name != "ER") if zero_mask == "auto" else bool(zero_mask)
        if segments and name in CYCLES and segments[-1][0] == name and segments[-1][2] == zero:
            segments[-1][1] += 1
        else:
            segments.append([name, 1, zero])
        if name in CYCLES:
            cycles += 1
            if period and cycles % period == 0:
                segments.append(["Sup", 1, False])
    return Schedule(recipe=recipe, segments=tuple(Segment(*s) for s in segments), nb_cycles=cycles,
                    nb_hio_raar=nb_hio_raar, explicit_sup=explicit)


def resolve_smooth_width(smooth_width, sched: Schedule, start_cycle: int = 0):
    """A (begin, end, None) smoothing schedule ends with the recipe's HIO/RAAR cycles (PyNX runner's rule):
    returns (begin, end, start_cycle + nb_hio_raar); a float or a complete triple is returned unchanged."""
    if isinstance(smooth_width, (list, tuple)) and len(smooth_width) == 3 and (
            smooth_width[2] is None or smooth_width[2] != smooth_width[2]):
        return (smooth_width[0], smooth_width[1], start_cycle + sched.nb_hio_raar)
    return smooth_width


def to_operator(sched: Schedule, support_update=None, beta: float = 0.9, calc_llk: int = 0):
    """The schedule as one PyNX-style operator chain (right-most applied first), e.g. Sup*ER**20*Sup*HIO**20.

    "Sup" segments apply support_update (one instance, so a retuned threshold carries on); without one they are
    skipped. Cycle operators carry their segment's zero_mask.
    """
    from physics.phasing.operators import ER, HIO, LLK, RAAR, Chain, FourierApplyAmplitude, Identity

    make = {"ER": lambda z: ER(calc_llk=calc_llk, zero_mask=z),
            "HIO": lambda z: HIO(beta=beta, calc_llk=calc_llk, zero_mask=z),
            "RAAR": lambda z: RAAR(beta=beta, calc_llk=calc_llk, zero_mask=z),
            "FAA": lambda z: FourierApplyAmplitude(), "LLK": lambda z: LLK(), "Sup": lambda z: support_update}
    ops = []
    for seg in sched.segments:
        op = make[seg.name](seg.zero_mask)
        if op is None:
            continue
        ops.append(op ** seg.n if seg.n > 1 else op)
    return Chain(list(reversed(ops))) if ops else Identity()


class Monitor:
    """Progress and cancellation around an operator chain: installs cycle hooks on a CDI for a `with` block.

    should_cancel() is checked before each cycle (Cancelled is raised); progress(done, total) after each, with
    `runs` cycles counted per cycle of a batched state."""

    def __init__(self, cdi, total: int, progress=None, should_cancel=None, runs: int = 1, offset: int = 0):
        self.cdi, self.total, self.progress, self.should_cancel = cdi, total, progress, should_cancel
        self.runs, self.done = runs, offset

    def _before(self, cdi):
        from physics.phasing.cdi import Cancelled

        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled(f"cancelled after {self.done} of {self.total} cycles")

    def _after(self, cdi):
        self.done += self.runs
        if self.progress is not None:
            self.progress(self.done, self.total)

    def __enter__(self):
        self.cdi.cycle_hooks.append(self._before)
        self.cdi.after_cycle_hooks.append(self._after)
        return self

    def __exit__(self, *exc):
        self.cdi.cycle_hooks.remove(self._before)
        self.cdi.after_cycle_hooks.remove(self._after)
        return False


def prepare_support_update(sched: Schedule, support_update, start_cycle: int = 0):
    """The support update a schedule runs: a default one when the recipe names Sup and none is given, and a copy
    with a (begin, end, None) smoothing schedule resolved to the recipe (see resolve_smooth_width)."""
    import copy

    from physics.phasing.operators import SupportUpdate

    if sched.explicit_sup and support_update is None:
        support_update = SupportUpdate()
    if support_update is not None and support_update.smooth_width[2] is None:
        support_update = copy.copy(support_update)
        support_update.smooth_width = resolve_smooth_width(support_update.smooth_width, sched, start_cycle)
    return support_update


def run_recipe(cdi, recipe: str = "HIO**400,RAAR**1000,ER**300", support_update=None, update_period: int = 20,
               progress=None, should_cancel=None, beta: float = 0.9, calc_llk: int = 0, zero_mask=False):
    """Apply a recipe to cdi left to right: schedule() -> to_operator() -> `op * cdi`, with support_update after
    every update_period-th cycle (only where the recipe names "Sup", if it does).

    A support update whose smooth_width has n=None uses the recipe's HIO+RAAR cycle count (PyNX runner).
    progress(done, total) is called after each cycle; should_cancel() is checked between cycles and raises
    Cancelled. calc_llk=k computes the LLK every k cycles (0: never, use the LLK operator at the end).
    The last support threshold (after guard retuning) is left in cdi.support_threshold.
    zero_mask: masked voxels are forced to 0 by the projection (True), left free (False), or, like PyNX's
    BCDI runner, "auto": forced to 0 during the first 60 % of the HIO/RAAR cycles, free afterwards (and in ER).
    Detector gaps left free from the start let the algorithms fill them with whatever grows the support.
    """
    sched = schedule(recipe, update_period, zero_mask, support_update=support_update is not None)
    sup = prepare_support_update(sched, support_update, cdi.nb_cycle)
    op = to_operator(sched, sup, beta, calc_llk)
    try:
        with Monitor(cdi, sched.nb_cycles, progress, should_cancel):
            op * cdi
    finally:
        cdi.zero_mask = False
    return cdi
