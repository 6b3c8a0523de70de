"""Recipe strings ("HIO**400,RAAR**1000,ER**300") parsed into a flat list of steps (the grammar only; the
schedule that engines run is physics.phasing.schedule).

Grammar: comma-separated terms applied left to right; inside a term, a product `A*B` applies B first (operator
algebra), `X**n` repeats, parentheses group: "ER**50,(Sup*ER**5*HIO**50)**10". Names (case-insensitive):
ER, HIO, RAAR, Sup (the support update given to run_recipe), FAA / FourierApplyAmplitude, LLK.
"""
from __future__ import annotations

import re

from physics.errors import InputError

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
