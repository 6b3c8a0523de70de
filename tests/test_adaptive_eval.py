"""bench.adaptive_eval's calibration report: recipe variants side by side on the crystals they share, with the
seeded run's pass count and the gate's errors, from records (the computation itself is bench.cnn_eval's)."""
import argparse
import json
import math

from bench import adaptive_eval


def _rec(seed, rmse, wall, status="ok", seeded_ok=None, recipe="R1"):
    cands = [{"name": "cnn-raar-er", "status": "uncertain" if seeded_ok is not None else "ok"}]
    if seeded_ok is not None:
        cands.append({"name": "standard-run-1", "seeding": "cnn_object", "status": "ok" if seeded_ok else "uncertain"})
    return {"seed": seed, "phase_range": 3 * math.pi, "phase_rmse": rmse, "iou": 0.9, "wall_s": wall, "cpu_s": wall,
            "status": status, "fallback_ran": seeded_ok is not None, "candidates": cands, "seeded_recipe": recipe,
            "fallback_recipe": "FULL"}


def test_calib_report_tables_variants_on_common_crystals(tmp_path):
    a = [_rec(1, 0.1, 2.0), _rec(2, 0.2, 10.0, seeded_ok=True), _rec(3, 0.9, 30.0, seeded_ok=False),
         _rec(4, 0.1, 2.0)]  # seed 3: wrong and marked ok (silent)
    b = [_rec(1, 0.1, 2.0, recipe="R2"), _rec(2, 0.2, 40.0, seeded_ok=False, recipe="R2"),
         _rec(3, 0.2, 50.0, "uncertain", seeded_ok=False, recipe="R2")]  # no seed 4: left out of both rows
    for label, recs in (("short", a), ("long", b)):
        (tmp_path / f"calib_adaptive_{label}_m-1.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    text = adaptive_eval.calib_report(argparse.Namespace(out=str(tmp_path)))
    assert "3 calibration crystals common to every variant" in text
    assert "| short_m-1 | R1 | FULL | 2π–5π | 3 | 67 | 10.0 | 14.0 | 10.0 |" in text
    assert "| 1/2 | 1 | 0 |" in text  # short: seeded run passed once of twice; one silent failure, none missed
    assert "| long_m-1 | R2 | FULL | 2π–5π | 3 | 100 | 40.0 |" in text and "| 0/2 | 0 | 1 |" in text
    assert "The strategy ships `seeded_recipe = " in text
