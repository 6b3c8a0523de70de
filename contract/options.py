"""The one options schema of a reconstruction (CNN + refinement), with one set of names, defaults and bounds.

The REST request model (service/models.py), the `reconstruct` and `info` CLI flags (cli/cmd_reconstruct.py), the
job runner (workers/pipeline.run_job), the front end (physics.preprocess.FrontEndOptions.from_options) and the
evaluation (bench/cnn_eval.py) are all built from `ReconOptions`,
and `ReconOptions.recipe()` is the one recipe string that is both run and recorded. Standard library only,
so the gateway imports it without numpy or torch.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from physics.errors import OptionsError

ENGINES = ("builtin", "pynx")
ENGINE_ALIASES = {"torch": "builtin"}  # the built-in engine is the PyTorch one; "torch" was the API's old name
PRE_RECIPE_STEPS = ("ER", "HIO", "RAAR")
PRE_RECIPE_PATTERN = re.compile(r"^(ER|HIO|RAAR)\*\*\d{1,5}(,(ER|HIO|RAAR)\*\*\d{1,5})*$")
PRE_RECIPE_MAX_LENGTH = 80
CROP_MIN, CROP_MAX = 16, 2048
METHODS = ("cnn-er", "cnn-raar-er", "standard", "adaptive")  # workers/strategy.py runs them
NEGATIVES = ("error", "clip", "mask")  # what the front end does with negative values (physics.preprocess)
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")


def _opt(default, help: str, *, ge=None, gt=None, le=None, lt=None, rest: bool = True, flags: tuple = (),
         metavar: str | None = None):
    """A schema field: default, one-line help, numeric bounds, whether the REST API exposes it, CLI aliases."""
    return field(default=default, metadata={"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "rest": rest,
                                            "aliases": flags, "metavar": metavar})


@dataclass(frozen=True)
class ReconOptions:
    """Options of one reconstruction; validated on construction (OptionsError names the field)."""

    method: str = _opt("adaptive", "strategy: adaptive (CNN first, then standard runs until one passes the "
                                   "quality gate), cnn-er (the paper's CNN + border-only ER), cnn-raar-er "
                                   "(RAAR**200 first), standard (multi-run recipe); every method reports "
                                   "ok/uncertain")
    max_runs: int = _opt(6, "adaptive: at most this many fallback standard runs", ge=0, le=100)
    max_seconds: float = _opt(600.0, "adaptive: time budget of the fallback runs, seconds", gt=0.0, le=86_400.0)
    crop_size: int | tuple[int, int, int] | None = _opt(
        None, "(z, y, x) crop box around the Bragg peak (one size for all axes, or three); "
              "default (null/absent): chosen from the measured oversampling (a 64³ input is used as it is)",
        ge=CROP_MIN, le=CROP_MAX, metavar="N|Z,Y,X")
    cnn_oversampling: float | None = _opt(
        None, "the oversampling the front end aims the CNN's 64³ grid at, for inputs larger than 64³ (inside the "
              "model's training range); default (null/absent): the range's geometric centre "
              "(physics.preprocess.CNN_TARGET_POSITION, chosen by measurement: bench/cnn_input.py)",
        gt=2.0, le=16.0, metavar="X")
    refine_binned: bool = _opt(False, "refine on the binned 64³ grid instead of the crop at full resolution "
                                      "(needs integer binning on every axis)")
    photon_scale: float | None = _opt(None, "photons per intensity unit; default (null/absent): 1 for "
                                            "integer counts, else estimated from the lowest values", gt=0.0)
    background: float = _opt(0.0, "constant background per voxel subtracted from the data; 0 = none", ge=0.0)
    photon_threshold: float = _opt(0.0, "values below it (after the background) are set to 0; 0 = none", ge=0.0)
    negative: str = _opt("error", "negative values (e.g. after the background): error (refuse), clip (to 0) or "
                                  "mask (leave them out of the fit)")
    er_cycles: int = _opt(400, "ER refinement cycles after the CNN; 0 = the CNN-only object", ge=0, le=100_000,
                          flags=("--refine",))
    pre_recipe: str = _opt("", "HIO/RAAR cycles run before the ER cycles, with the same border-only support "
                               "rule, e.g. RAAR**200; empty = the paper's ER only", metavar="RECIPE")
    update_period: int = _opt(20, "support update every K refinement cycles", ge=1, le=100_000)
    border_n: int = _opt(2, "support updates may only change voxels within n of the support border", ge=0, le=64)
    support_threshold: float = _opt(0.25, "shrink-wrap threshold, relative to the rms of the smoothed modulus "
                                          "inside the support", gt=0.0, lt=1.0, flags=("--threshold",))
    smooth: float = _opt(0.5, "Gaussian sigma (voxels) of the shrink-wrap smoothing during refinement",
                         ge=0.0, le=16.0)
    init_threshold: float = _opt(0.2, "initial support: smoothed |CNN object| > init_threshold x max",
                                 gt=0.0, lt=1.0)
    free_ratio: float = _opt(0.05, "fraction of voxels withheld for the free LLK", ge=0.0, lt=0.5)
    engine: str = _opt("builtin", "refinement engine: builtin (PyTorch; 'torch' is accepted) or pynx "
                                  "(its CPU back-end ignores border_n)")
    device: str = _opt("auto", "auto (CUDA when present, else CPU), cpu or cuda[:N]; a service job runs on its worker's device", rest=False)
    seed: int = _opt(0, "seed of the free-voxel draw", ge=0, le=2**32 - 1)
    model: str | None = _opt(None, "CNN weights file; default: the shipped model", rest=False, metavar="PATH")

    def __post_init__(self):
        crop = self.crop_size
        if isinstance(crop, (list, tuple)):
            object.__setattr__(self, "crop_size", tuple(crop))
        object.__setattr__(self, "engine", ENGINE_ALIASES.get(self.engine, self.engine))
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        check_pre_recipe(self.pre_recipe)
        if self.pre_recipe and self.er_cycles == 0:
            raise OptionsError("a pre-recipe needs er_cycles > 0 (ER refinement cycles): it runs before them")

    def recipe(self) -> str:
        """The refinement recipe that is run and recorded: pre_recipe (if any) then the ER cycles."""
        return f"{self.pre_recipe},ER**{self.er_cycles}" if self.pre_recipe else f"ER**{self.er_cycles}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly mapping (crop_size as a list), the inverse of `from_mapping`."""
        d = dataclasses.asdict(self)
        if isinstance(d["crop_size"], tuple):
            d["crop_size"] = list(d["crop_size"])
        return d

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None, **overrides) -> "ReconOptions":
        """Options from a mapping (a job's options, JSON): absent keys take the defaults, unknown keys are refused."""
        merged = {**(values or {}), **overrides}
        unknown = sorted(set(merged) - set(names()))
        if unknown:
            raise OptionsError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(names())}")
        return cls(**{k: v for k, v in merged.items() if not (k == "crop_size" and v in ((), []))})



def names() -> tuple[str, ...]:
    """Every option name, in schema order."""
    return tuple(f.name for f in dataclasses.fields(ReconOptions))


def schema_fields() -> list[dataclasses.Field]:
    """The dataclass fields with their metadata (help, bounds, rest, aliases): what generators read."""
    return list(dataclasses.fields(ReconOptions))


def rest_fields() -> list[dataclasses.Field]:
    """The fields a REST client may set (device and model are the worker's choice)."""
    return [f for f in schema_fields() if f.metadata["rest"]]


def scalar_type(f: dataclasses.Field) -> type:
    """int, float or bool (an optional `X | None` field: X), str otherwise (crop_size aside): what the CLI parses
    and pydantic checks."""
    name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    name = name.removesuffix(" | None")
    return {"int": int, "float": float, "bool": bool}.get(name, str)


def optional(f: dataclasses.Field) -> bool:
    """Whether None is a value of the field (null/absent in REST, flag not given on the CLI)."""
    return (f.type if isinstance(f.type, str) else str(f.type)).endswith("| None")


def check_pre_recipe(value: str) -> str:
    """A pre-recipe is empty or comma-separated NAME**N steps with NAME in ER, HIO, RAAR (readable error)."""
    if not isinstance(value, str):
        raise OptionsError(f"pre-recipe must be a string such as RAAR**200, got {type(value).__name__}")
    if len(value) > PRE_RECIPE_MAX_LENGTH:
        raise OptionsError(f"pre-recipe is {len(value)} characters long, at most {PRE_RECIPE_MAX_LENGTH}")
    if value and re.search(r"\*\*0+(?!\d)", value):
        raise OptionsError(f"pre-recipe {value!r}: a step count must be >= 1 (leave the step out)")
    if value and not PRE_RECIPE_PATTERN.match(value):
        raise OptionsError(f"pre-recipe {value!r} is not a recipe of ER, HIO and RAAR steps: write NAME**N "
                           f"steps separated by commas, e.g. RAAR**200 or HIO**100,RAAR**100")
    return value


def _bounds_text(m: Mapping) -> str:
    parts = [f"{op} {m[k]}" for k, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if m[k] is not None]
    return " and ".join(parts)


def _check_number(name: str, what: str, value, m: Mapping, kind) -> None:
    ok_type = isinstance(value, kind) and not isinstance(value, bool)
    if not ok_type:
        raise OptionsError(f"{name} ({what}) must be a {'number' if kind is not int else 'whole number'}, "
                           f"got {value!r}")
    if ((m["gt"] is not None and not value > m["gt"]) or (m["ge"] is not None and not value >= m["ge"])
            or (m["lt"] is not None and not value < m["lt"]) or (m["le"] is not None and not value <= m["le"])):
        raise OptionsError(f"{name} ({what}) must be {_bounds_text(m)}, got {value}")


def _check_field(f: dataclasses.Field, value) -> None:
    m, name, what = f.metadata, f.name, f.metadata["help"].split(";")[0].split(",")[0]
    if name == "crop_size":
        if value is None:
            return
        dims = value if isinstance(value, tuple) else (value,)
        if len(dims) not in (1, 3):
            raise OptionsError(f"crop_size must be one size or three (z, y, x), got {list(dims)}")
        for d in dims:
            _check_number(name, "crop box size per axis", d, m, int)
    elif name == "method":
        if value not in METHODS:
            raise OptionsError(f"unknown method {value!r}: use one of {', '.join(METHODS)}")
    elif name == "negative":
        if value not in NEGATIVES:
            raise OptionsError(f"negative must be one of {', '.join(NEGATIVES)}, got {value!r}")
    elif name == "engine":
        if value not in ENGINES:
            raise OptionsError(f"unknown engine {value!r}: use builtin (alias torch) or pynx")
    elif name == "device":
        if not isinstance(value, str) or not DEVICE_PATTERN.match(value):
            raise OptionsError(f"unknown device {value!r}: use auto, cpu, cuda or cuda:N")
    elif name == "model":
        if value is not None and (not isinstance(value, str) or not value or len(value) > 4096):
            raise OptionsError(f"model must be a weights file path, got {value!r}")
    elif name == "pre_recipe":
        return  # checked by check_pre_recipe
    elif value is None and optional(f):
        return
    elif scalar_type(f) is bool:
        if not isinstance(value, bool):
            raise OptionsError(f"{name} must be true or false, got {value!r}")
    elif scalar_type(f) is int:
        _check_number(name, what, value, m, int)
    elif scalar_type(f) is float:
        _check_number(name, what, value, m, (int, float))


# The front end's fields (physics.preprocess.FrontEndOptions.from_options reads them; `info` takes their flags).
FRONTEND_FIELDS = ("crop_size", "cnn_oversampling", "refine_binned", "photon_scale", "background", "photon_threshold",
                   "negative")

DEFAULTS = ReconOptions()
