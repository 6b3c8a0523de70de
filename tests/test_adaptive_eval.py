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


def test_wide_reference_lines_compare_on_common_crystals_of_the_same_size(tmp_path):
    rows = {s: _rec(s, rmse, wall) for s, rmse, wall in ((1, 0.1, 4.0), (2, 0.9, 20.0), (3, 0.2, 6.0))}
    ref = [{**_rec(1, 0.8, 10.0), "seed": 1}, {**_rec(2, 0.1, 12.0), "seed": 2}]  # no seed 3: not compared
    (tmp_path / "wide_standard-1x1-HIO.jsonl").write_text("\n".join(json.dumps(r) for r in ref))
    (tmp_path / "wide_standard-1x1-HIO_128.jsonl").write_text(json.dumps(_rec(3, 0.1, 1.0)))  # another size
    text = "\n".join(adaptive_eval.reference_lines(rows, tmp_path, "64"))
    assert "standard-1x1-HIO: nb_run x nb_keep" in text and "2 crystals" in text
    assert "- 2π–5π (2): standard 1, adaptive 1 successes; median wall 11.0 s against 12.0 s." in text
    assert "_128" not in text
    assert adaptive_eval.reference_lines(rows, tmp_path / "none", "64") == []


def test_support_slack_takes_the_wrong_ok_rows_then_right_ones():
    from bench.support_slack import chosen_seeds

    recs = {1: _rec(1, 0.1, 1.0), 2: _rec(2, 0.9, 1.0), 3: _rec(3, 0.1, 1.0, "uncertain"), 4: _rec(4, 0.2, 1.0),
            5: {**_rec(5, 0.1, 1.0), "iou": 0.6}}  # 2: wrong phase, 5: wrong support, both marked ok
    assert chosen_seeds(recs, 1) == [2, 5, 1]
    assert chosen_seeds(recs, 0) == [2, 5]
