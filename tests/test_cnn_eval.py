"""The paper's comparison harness (bench.cnn_eval) end to end on two crystals, in a temporary results folder.

The methods here are the real ones ((a), (b), (b+) with the shipped model, (b*) from the true phase, (c) with a
short recipe), so this checks
the resumable JSON-lines files, the shared free voxels and the target lines, not the model's quality.
"""
import json

import pytest

from bench import cnn_eval


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(cnn_eval, "RESULTS", tmp_path)
    return tmp_path


def test_run_is_resumable_and_reports_targets_for_b_and_b_plus(results):
    argv = ["run", "--n-high", "1", "--n-low", "1", "--nb-run", "2", "--nb-keep", "1",
            "--recipe", "HIO**20,RAAR**20,ER**20", "--methods", "cnn", "cnn_er", "cnn_raar_er", "oracle_er", "standard"]
    assert cnn_eval.main(argv) == 0
    files = sorted(p.name for p in results.glob("eval_*.jsonl"))
    assert len(files) == 5 and "eval_oracle_er.jsonl" in files and any(f.startswith("eval_cnn_raar_er_unet_") for f in files), files
    before = {f: (results / f).read_text() for f in files}
    for text in before.values():
        recs = [json.loads(line) for line in text.splitlines()]
        assert len(recs) == 2 and {r["seed"] for r in recs} == {cnn_eval.test_crystals(1, 1)[0][0],
                                                                  cnn_eval.test_crystals(1, 1)[1][0]}
        assert all(0 <= r["iou"] <= 1 and r["phase_rmse"] >= 0 and r["wall_s"] > 0 for r in recs)
        assert all(r["scored_on"] == "shape" and 0 <= r["iou_support"] <= 1 for r in recs)  # the product's shape
    assert cnn_eval.main(argv) == 0  # everything is done: nothing recomputed or appended
    assert {f: (results / f).read_text() for f in files} == before

    # a row scored on the phasing support (before 2026-12-07) is recomputed on resume, and the reports say so
    (cnn_file,) = results.glob("eval_cnn_unet_*.jsonl")
    old = [json.loads(line) for line in cnn_file.read_text().splitlines()]
    old[0].pop("scored_on")
    assert "scored on the phasing support in 1 of 2 rows" in cnn_eval.scoring_note(old)
    assert cnn_eval.scoring_note(old[1:]) == ""
    assert "in all 1 rows" in cnn_eval.scoring_note(old[:1])
    cnn_file.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert cnn_eval.main(argv[:-5] + ["cnn"]) == 0
    again = [json.loads(line) for line in cnn_file.read_text().splitlines()]
    assert len(again) == 3 and again[-1]["seed"] == old[0]["seed"] and again[-1]["scored_on"] == "shape"

    (b_plus,) = results.glob("eval_cnn_raar_er_*.jsonl")
    rec = json.loads(b_plus.read_text().splitlines()[0])
    assert rec["timings"]["refine"] > 0 and rec["llk_free"] > 0  # RAAR + ER ran, free LLK on withheld voxels

    text = "\n".join(cnn_eval.target_lines())
    assert "**Targets**" in text and "(b) ≥ 90 % on 2π–5π" in text
    assert "Our variant (b+)" in text and "(b+) beats (c) on 2π–5π" in text
    assert "Upper bound" in text
    oracle = [json.loads(line) for line in (results / "eval_oracle_er.jsonl").read_text().splitlines()]
    assert all(r["phase_rmse"] < 0.2 and r["iou"] > 0.7 for r in oracle)  # a perfect CNN: (b) recovers the crystal


def test_adaptive_target_lines_check_success_time_and_silent_failures(tmp_path, monkeypatch):
    """The adaptive issue's targets from records: success against (c), the time ratio, and a failure marked ok
    (silent) counted and named by seed."""
    import math

    def rec(seed, rng, rmse, wall, status="ok", fallback=False):
        return {"seed": seed, "phase_range": rng, "phase_rmse": rmse, "iou": 0.9, "wall_s": wall, "status": status,
                "fallback_ran": fallback}

    hi, lo = 3 * math.pi, 1.0
    adaptive = {1: rec(1, hi, 0.1, 5.0), 2: rec(2, hi, 0.1, 20.0, fallback=True), 3: rec(3, hi, 0.9, 30.0),
                4: rec(4, lo, 0.05, 2.0)}
    standard = {s: rec(s, r["phase_range"], 0.1 if s != 3 else 1.0, 100.0) for s, r in adaptive.items()}
    text = "\n".join(cnn_eval.adaptive_target_lines(adaptive, standard, tmp_path / "eval_adaptive_x.jsonl",
                                                    tmp_path / "eval_standard_y.jsonl"))
    assert "2π–5π (3 crystals): adaptive succeeds on 67 %, (c) on 67 %" in text
    assert "success ≥ 90 % and ≥ (c)'s: **missed**" in text  # 67 % < 90 %
    assert "median wall time ≤ 1/10 of (c)'s: **missed** (1/5.0)" in text  # median 20 s vs 100 s
    assert "fallback ran on 1/3; marked ok but wrong: 1 (seeds 3)" in text
    assert "every failure marked uncertain: **missed** (1 silent" in text
    assert "< π (1 crystals): adaptive succeeds on 100 %" in text and "1/20 of (c)'s: **met** (1/50.0)" in text
    assert "Same machine, same run" not in text  # no timed pairs for this model
    assert "scored on the phasing support" not in text  # neither side scored on the shape: nothing to say

    # adaptive rows scored on the shape, (c)'s on the support: the most a rescore could lift (c) by is stated
    shaped = {s: {**r, "scored_on": "shape"} for s, r in adaptive.items()}
    short = {**standard, 1: {**standard[1], "iou": 0.6}}  # phase right, support IoU short: could turn right
    text = "\n".join(cnn_eval.adaptive_target_lines(shaped, short, tmp_path / "eval_adaptive_x.jsonl",
                                                    tmp_path / "eval_standard_y.jsonl"))
    assert ("(c)'s IoU was scored on the phasing support in 3 of its 3 rows (not rerun); scored on the shape, at "
            "most 1 more of them could succeed (phase right, IoU short): (c) ≤ 67 %") in text

    # pairs timed back to back in one run (bench.cnn_eval timing) are reported with their own verdict
    pairs = tmp_path / "timing_same_run.jsonl"
    pairs.write_text("\n".join(json.dumps({"seed": s, "phase_range": hi, "model": "x", "adaptive_s": a, "c_s": c,
                                            "adaptive_success": True, "c_success": s != 3})
                                for s, a, c in ((1, 4.0, 100.0), (2, 20.0, 120.0), (3, 8.0, 110.0))))
    monkeypatch.setattr(cnn_eval, "RESULTS", tmp_path)
    text = "\n".join(cnn_eval.adaptive_target_lines(adaptive, standard, tmp_path / "eval_adaptive_x.jsonl",
                                                    tmp_path / "eval_standard_y.jsonl"))
    assert ("adaptive on 3 crystals at 2π–5π and (c) on 3 of them, interleaved in one process): median wall "
            "adaptive 8.0 s, (c) 110.0 s (range 100-120 s), (c)/adaptive = 13.8x (median of the per-crystal ratios "
            "where both ran 13.8x); success there: adaptive 3/3, (c) 2/3") in text
    assert "1/10 of (c)'s in the same run: **met**" in text
    # --c-every: (c) timed on some crystals only; adaptive's median over all, (c)'s over those that have it
    pairs.write_text("\n".join(json.dumps({"seed": s, "phase_range": hi, "model": "x", "adaptive_s": a, "c_s": c,
                                            "adaptive_success": True, "c_success": None if c is None else True})
                                for s, a, c in ((1, 4.0, 100.0), (2, 20.0, None), (3, 30.0, None))))
    text = "\n".join(cnn_eval.adaptive_target_lines(adaptive, standard, tmp_path / "eval_adaptive_x.jsonl",
                                                    tmp_path / "eval_standard_y.jsonl"))
    assert "adaptive on 3 crystals at 2π–5π and (c) on 1 of them" in text and "(c)/adaptive = 5.0x" in text
    assert "1/10 of (c)'s in the same run: **missed**" in text


def test_size_128_runs_the_front_end_and_checks_against_64(results):
    """--size 128: the same crystal as a detector writes it goes through the front end's crop; its record carries
    the front end's decisions, its file is named with the size (64³ files untouched), and the report compares it
    with the 64³ result of the same method on the same crystal."""
    from physics.errors import InputError

    argv = ["run", "--n-high", "1", "--n-low", "0", "--refine", "20", "--methods", "cnn_er"]
    assert cnn_eval.main([*argv, "--size", "128"]) == 0
    (f128,) = results.glob("eval_cnn_er_*.jsonl")
    assert f128.stem.endswith("_128") and cnn_eval.size_of(f128) == "128"
    (rec,) = [json.loads(line) for line in f128.read_text().splitlines()]
    fe = rec["frontend"]
    assert rec["size"] == "128" and fe["input_shape"] == [128, 128, 128] and len(rec["true_oversampling"]) == 3
    assert all(3.0 <= o <= 6.0 for o in rec["true_oversampling"])  # the detector's oversampling range
    assert fe["crop_shape"] != [128, 128, 128] or max(fe["cnn_binning"]) > 1  # the front end cropped or binned
    assert 0 <= rec["iou"] <= 1 and rec["phase_rmse"] >= 0

    assert "not checked" in cnn_eval.size_report()  # no 64³ result of that crystal yet
    assert cnn_eval.main(argv) == 0  # the 64³ run of the same crystal goes to the file without a suffix
    (f64,) = [f for f in results.glob("eval_cnn_er_*.jsonl") if cnn_eval.size_of(f) == "64"]
    assert f64.with_name(f64.stem + "_128.jsonl") == f128
    text = cnn_eval.size_report()
    assert "| 128 | cnn_er_unet_" in text and "size 128 vs 64³ on the same crystals, cnn_er_" in text
    assert "(1 crystals, one is 100.0 points): success" in text and "within 10 points: **" in text
    assert "_128" not in "\n".join(cnn_eval.target_lines())  # the 64³ targets read the 64³ files only

    with pytest.raises(InputError, match="oracle_er"):
        cnn_eval.main(["run", "--n-high", "1", "--n-low", "0", "--methods", "oracle_er", "--size", "128"])
    with pytest.raises(InputError, match="--size"):
        cnn_eval.parse_size("32")


def test_a_larger_pattern_row_stands_only_with_todays_front_end_decisions():
    meta = {"crop_shape": [128, 64, 96], "crop_offsets": [0, 96, 80], "cnn_binning": [2, 1, 1],
            "cnn_resampled": [False, False, True], "refine_binning": [1, 1, 1], "oversampling": [5.6, 3.5, 4.5]}
    same = {**meta, "oversampling": [5.5, 3.6, 4.4]}  # another measured value, the same decisions: stands
    assert cnn_eval.frontend_decisions(same) == cnn_eval.frontend_decisions(meta)
    other = {**meta, "crop_shape": [50, 64, 96], "crop_offsets": [39, 96, 80]}  # a 50-frame crop: recomputed
    assert cnn_eval.frontend_decisions(other) != cnn_eval.frontend_decisions(meta)
    assert cnn_eval.frontend_decisions(None) is None and cnn_eval.frontend_decisions({}) is None


def test_later_held_out_sets_have_their_own_files_and_run_at_larger_sizes_only(results):
    from physics.errors import InputError

    assert cnn_eval.set_prefix("held-out") == "eval_" and cnn_eval.set_prefix("fresh") == "fresh_"
    with pytest.raises(InputError, match="--crystals fresh runs at a --size other than 64"):
        cnn_eval.main(["run", "--crystals", "fresh", "--n-high", "1", "--n-low", "0", "--methods", "cnn"])
    assert not list(results.glob("*.jsonl"))
