"""Torch phasing engine with PyNX conventions: CDI state, composable operators, recipes, multi-run and modes.

Same code on CPU and CUDA (device argument); arrays are fft-shifted inside, centred numpy at the edges.
"""
from physics.phasing.cdi import (CDI, Cancelled, SupportTooLarge, SupportTooSmall, device_name, dilate_box,
                                  resolve_device, torch_threads)
from physics.phasing.engine import BuiltinEngine, Engine, PhaseConfig, Problem, RunOutcome, RunSpec
from physics.phasing.llk import llk_sums, normalise_llk
from physics.phasing.multirun import MultiRunResult, center_on_support, ortho_modes, phase_runs
from physics.phasing.operators import (ER, HIO, LLK, RAAR, AutoCorrelationSupport, FourierApplyAmplitude,
                                       InitFreePixels, InitObjRandom, Operator, ScaleObj, SupportUpdate,
                                       free_pixel_mask)
from physics.phasing.recipe import count_cycles, parse_recipe
from physics.phasing.schedule import Schedule, Segment, run_recipe, schedule, to_operator

__all__ = [
    "CDI", "Cancelled", "SupportTooLarge", "SupportTooSmall", "device_name", "dilate_box", "resolve_device",
    "torch_threads", "BuiltinEngine", "Engine", "PhaseConfig", "Problem", "RunOutcome", "RunSpec",
    "llk_sums", "normalise_llk", "MultiRunResult", "center_on_support", "ortho_modes", "phase_runs",
    "ER", "HIO", "LLK", "RAAR", "AutoCorrelationSupport", "FourierApplyAmplitude", "InitFreePixels",
    "InitObjRandom", "Operator", "ScaleObj", "SupportUpdate", "free_pixel_mask",
    "count_cycles", "parse_recipe", "run_recipe", "Schedule", "Segment", "schedule", "to_operator",
]
