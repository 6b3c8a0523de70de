"""Recipe strings ("HIO**400,RAAR**1000,ER**300") parsed into a flat list of steps, and run_recipe.

Grammar: comma-separated terms applied left to right; inside a term, a product `A*B` applies B first (operator
algebra), `X**n` repeats, parentheses group: "ER**50,(Sup*ER**5*HIO**50)**10". Names (case-insensitive):
ER, HIO, RAAR, Sup (the support update given to run_recipe), FAA / FourierApplyAmplitude, LLK.
"""
from __future__ import annotations

import copy
import re

from physics.errors import InputError
from physics.phasing.cdi import CDI, Cancelled
from physics.phasing.operators import SupportUpdate

_NAMES = {"er": "ER", "hio": "HIO", "raar": "RAAR", "sup": "Sup", "faa": "FAA",
          "fourierapplyamplitude": "FAA", "llk": "LLK"}
_TOKEN = re.compile(r"\s*(\*\*|\*|,|\(|\)|[A-Za-z]+|\d+)")
MAX_STEPS = 10_000_000


def _tokenize(recipe: str) -> list[str]:
    pos, out = 0, []
    recipe = recipe.strip()
    while pos < len(recipe):
        m = _TOKEN.match(recipe, pos)
        if not m:
            raise InputError(f"cannot parse recipe {recipe!r} at {recipe[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
        while pos < len(recipe) and recipe[pos].isspace():
            pos += 1
    return out


def parse_recipe(recipe: str) -> list[str]:
    """Expand a recipe string into the ordered list of steps ("ER", "HIO", "RAAR", "Sup", "FAA", "LLK")."""
    if not isinstance(recipe, str) or not recipe.strip():
        raise InputError("recipe must be a non-empty string such as 'HIO**400,RAAR**1000,ER**300'")
    toks = _tokenize(recipe)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take(expected=None):
        nonlocal pos
        t = peek()
        if t is None or (expected is not None and t != expected):
            raise InputError(f"bad recipe {recipe!r}: expected {expected or 'a step'}, got {t!r}")
        pos += 1
        return t

    def seq():
        steps = term()
        while peek() == ",":
            take(",")
            steps = steps + term()
        return steps

    def term():
        factors = [factor()]
        while peek() == "*":
            take("*")
            factors.append(factor())
        steps = []
        for f in reversed(factors):  # A*B applies B first
            steps += f
        return steps

    def factor():
        t = take()
        if t == "(":
            steps = seq()
            take(")")
        elif t.lower() in _NAMES:
            steps = [_NAMES[t.lower()]]
        else:
            raise InputError(f"bad recipe {recipe!r}: unknown step {t!r} (use ER, HIO, RAAR, Sup, FAA, LLK)")
        while peek() == "**":
            take("**")
            n = take()
            if not n.isdigit():
                raise InputError(f"bad recipe {recipe!r}: '**' must be followed by an integer, got {n!r}")
            if int(n) < 1:
                raise InputError(f"bad recipe {recipe!r}: '**{n}' repeats nothing; a step count must be >= 1 "
                                 f"(leave the step out instead)")
            if len(steps) * int(n) > MAX_STEPS:
                raise InputError(f"recipe {recipe!r} expands to more than {MAX_STEPS} steps")
            steps = steps * int(n)
        return steps

    steps = seq()
    if pos != len(toks):
        raise InputError(f"bad recipe {recipe!r}: unexpected {toks[pos]!r}")
    return steps


def count_cycles(recipe: str) -> int:
    """Number of ER/HIO/RAAR cycles in a recipe."""
    return sum(s in ("ER", "HIO", "RAAR") for s in parse_recipe(recipe))


def run_recipe(cdi: CDI, recipe: str = "HIO**400,RAAR**1000,ER**300", support_update: SupportUpdate | None = None,
               update_period: int = 20, progress=None, should_cancel=None, beta: float = 0.9,
               calc_llk: int = 0, zero_mask=False) -> CDI:
    """Apply a recipe to cdi left to right, with support_update after every update_period-th cycle.

    If the recipe names "Sup" explicitly, support updates happen only there. A support update whose
    smooth_width has n=None uses the recipe's HIO+RAAR cycle count (PyNX runner). progress(done, total) is
    called after each cycle; should_cancel() is checked between cycles and raises Cancelled.
    calc_llk=k computes the LLK every k cycles (0: never, use the LLK operator at the end).
    The last support threshold (after guard retuning) is left in cdi.support_threshold.
    zero_mask: masked voxels are forced to 0 by the projection (True), left free (False), or, like PyNX's
    BCDI runner, "auto": forced to 0 during the first 60 % of the HIO/RAAR cycles, free afterwards (and in ER).
    Detector gaps left free from the start let the algorithms fill them with whatever grows the support.
    """
    if zero_mask not in (True, False, "auto"):
        raise InputError(f"zero_mask must be True, False or 'auto', got {zero_mask!r}")
    steps = parse_recipe(recipe)
    if update_period is not None and int(update_period) < 0:
        raise InputError(f"update_period must be >= 0, got {update_period}")
    explicit_sup = "Sup" in steps
    if explicit_sup and support_update is None:
        support_update = SupportUpdate()
    if support_update is not None and support_update.smooth_width[2] is None:
        support_update = copy.copy(support_update)
        b, e, _ = support_update.smooth_width
        support_update.smooth_width = (b, e, cdi.nb_cycle + sum(s in ("HIO", "RAAR") for s in steps))
    total = sum(s in ("ER", "HIO", "RAAR") for s in steps)
    zero_until = (int(0.6 * sum(s in ("HIO", "RAAR") for s in steps)) if zero_mask == "auto"
                  else (total if zero_mask else 0))
    done = 0
    hio_raar = 0
    for step in steps:
        if step in ("ER", "HIO", "RAAR"):
            hio_raar += step != "ER"
            cdi.zero_mask = (hio_raar <= zero_until and step != "ER") if zero_mask == "auto" else bool(zero_mask)
            if should_cancel is not None and should_cancel():
                raise Cancelled(f"cancelled after {done} of {total} cycles")
            want = calc_llk > 0 and cdi.nb_cycle % calc_llk == 0
            cdi.cycle(step, beta, calc_llk=want)
            done += 1
            if (not explicit_sup and support_update is not None and update_period
                    and done % int(update_period) == 0):
                support_update * cdi
            if progress is not None:
                progress(done, total)
        elif step == "Sup":
            support_update * cdi
        elif step == "FAA":
            cdi.fourier_apply_amplitude()
        elif step == "LLK":
            cdi.compute_llk()
    cdi.zero_mask = False
    return cdi
