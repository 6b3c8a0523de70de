"""bench/calibrate_gate.py and bench/adaptive_eval.py end to end on tiny settings in a temporary folder."""
import json

import pytest

from bench import adaptive_eval, calibrate_gate


def test_calibration_end_to_end_and_resume(tmp_path, one_torch_thread, capsys):
    args = ["run", "--n-high", "1", "--n-low", "1", "--out", str(tmp_path), "--er-cycles", "20",
            "--recipe", "HIO**20,RAAR**20,ER**10", "--pynx-high", "1"]
    first = ["--candidates", "cnn_er", "cnn_raar_er", "std_pynx", "std_cohere"]  # an earlier calibration's set
    assert calibrate_gate.main(args + first) == 0
    path = tmp_path / calibrate_gate.FILE
    before = {r["seed"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert calibrate_gate.main(args) == 0  # resumes per candidate: adds the fb_* runs, appends the whole record
    recs = list(calibrate_gate._jsonl(path).values())
    assert len(path.read_text().splitlines()) == 4
    for r in recs:
        assert r["candidates"]["std_cohere"] == before[r["seed"]]["candidates"]["std_cohere"]  # kept, not rerun
    assert sorted(r["seed"] for r in recs) == [calibrate_gate.HIGH_SEED0, calibrate_gate.LOW_SEED0]
    high = next(r for r in recs if r["seed"] == calibrate_gate.HIGH_SEED0)
    low = next(r for r in recs if r["seed"] == calibrate_gate.LOW_SEED0)
    assert set(high["candidates"]) == set(calibrate_gate.CANDIDATES)
    assert set(low["candidates"]) == {"cnn_er", "cnn_raar_er", "std_cohere", "fb_cnn_object", "fb_cnn_support"}
    from workers.strategy import SEEDED_RECIPE

    assert high["candidates"]["fb_cnn_object"]["recipe"] == SEEDED_RECIPE  # the strategy's own first fallback run
    assert high["candidates"]["fb_cnn_support"]["recipe"] == "HIO**20,RAAR**20,ER**10"
    assert "std_pynx" not in low["candidates"]  # PyNX-style only on the first --pynx-high 2π-5π crystals
    for r in recs:
        for v in r["candidates"].values():
            assert {"llk_free", "obj2_out", "support_ratio", "mean_to_max", "sharpness", "chi", "phase_rmse",
                    "iou", "success", "seconds"} <= set(v)
        # pairs within each session's candidates (the resumed ones start from a recomputed (b+))
        firsts = [n for n in ("cnn_er", "cnn_raar_er", "std_pynx", "std_cohere") if n in r["candidates"]]
        for group in (firsts, ["cnn_raar_er", "fb_cnn_object", "fb_cnn_support"]):
            for i, a in enumerate(group):
                for b in group[i + 1:]:
                    assert calibrate_gate._mismatch(r, a, b) is not None, (a, b)
        assert all(0 <= m <= 1 for m in r["mismatch"].values())
    assert calibrate_gate.main(args) == 0  # resumes: nothing recomputed, nothing duplicated
    assert len(path.read_text().splitlines()) == 4
    # a record made under another autocorrelation bound: its support ratios move to today's bound, nothing reruns
    rec = calibrate_gate._jsonl(path)[calibrate_gate.HIGH_SEED0]
    stale = json.loads(json.dumps(rec))
    stale["ac_size"] = 2 * rec["ac_size"]
    for v in stale["candidates"].values():
        v["support_ratio"] /= 2
    calibrate_gate._append(path, stale)
    assert calibrate_gate.main(args) == 0
    assert len(path.read_text().splitlines()) == 6
    new = calibrate_gate._jsonl(path)[calibrate_gate.HIGH_SEED0]
    assert new["ac_size"] == rec["ac_size"]
    for k, v in new["candidates"].items():
        assert v["support_ratio"] == pytest.approx(rec["candidates"][k]["support_ratio"])
        assert v["seconds"] == rec["candidates"][k]["seconds"]  # the same runs
    capsys.readouterr()
    assert calibrate_gate.main(["report", "--out", str(tmp_path), "--print", "--n-high", "1", "--n-low", "1"]) == 0
    text = capsys.readouterr().out
    assert "Fallback recipe" in text and "Gate thresholds" in text and "replayed" in text
    assert "| 2π–5π | cohere-style | 1 |" in text and "| 2π–5π | pynx-style | 1 |" in text
    assert "std_cohere 0/1" in text or "std_cohere 1/1" in text


def test_adaptive_eval_end_to_end(tmp_path, one_torch_thread, capsys):
    # --max-runs 0: only the CNN candidate, so the test stays short; the record still has every field
    assert adaptive_eval.main(["run", "--n-high", "1", "--n-low", "0", "--max-runs", "0",
                               "--out", str(tmp_path)]) == 0
    files = list(tmp_path.glob("eval_adaptive_*.jsonl"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text().splitlines()[0])
    assert rec["status"] in ("ok", "uncertain") and rec["nb_candidates"] == 1 and not rec["fallback_ran"]
    assert {"phase_rmse", "iou", "wall_s", "gate", "winner"} <= set(rec)
    capsys.readouterr()
    assert adaptive_eval.main(["report", "--out", str(tmp_path), "--print"]) == 0
    assert "| 2π–5π | 1 |" in capsys.readouterr().out


def _cand(success, llk_free, m2m=0.4):
    return {"success": success, "llk_free": llk_free, "obj2_out": 0.01, "mean_to_max": m2m, "support_ratio": 0.15,
            "seconds": 1.0}


def test_strict_floor_excludes_every_false_ok():
    # successes: free LLK 2-9, homogeneous; failures: free LLK 60+, and one that only mean_to_max gives away
    recs = [{"seed": i, "phase_range": 8.0, "candidates": {"cnn_raar_er": _cand(True, 2.0 + i)}, "mismatch": {}}
            for i in range(8)]
    recs += [{"seed": 50 + i, "phase_range": 8.0, "candidates": {"cnn_raar_er": _cand(False, 60.0 + i)},
              "mismatch": {}} for i in range(4)]
    recs.append({"seed": 99, "phase_range": 8.0, "candidates": {"cnn_raar_er": _cand(False, 2.5, 0.58)},
                 "mismatch": {}})
    loose, c95, _ = calibrate_gate.choose_thresholds(recs, 0.5)
    strict, c100, _ = calibrate_gate.choose_thresholds(recs, 1.0)
    assert c100["fp"] == 0 and c100["precision"] == 1.0
    assert c100["recall"] == 1.0 and c95["fp"] >= 0
    assert strict.max_mean_to_max < 0.58 and strict.max_llk_free < 60  # both kinds of failure fall outside


def test_confirmation_zone_rule_keeps_the_calibration_free_of_false_oks():
    """confirm_zone_choice: the zone's lower edge is the largest mean_to_max limit with no wrong candidate passing;
    a zone candidate that agrees with an independent start is ok, a wrong one with a far partner is not."""
    from physics.quality import GateThresholds

    recs = [{"seed": i, "phase_range": 8.0, "candidates": {"cnn_raar_er": _cand(True, 2.0, 0.30)}, "mismatch": {}}
            for i in range(6)]
    # a right candidate at 0.52, confirmed by an independent run (mismatch 0.03)
    recs.append({"seed": 20, "phase_range": 8.0, "candidates": {"cnn_raar_er": _cand(True, 2.0, 0.52),
                                                                "std_cohere": _cand(True, 2.0, 0.35)},
                 "mismatch": {"cnn_raar_er|std_cohere": 0.03}})
    # a wrong candidate at 0.50: its independent partner disagrees (0.4); a same-start one agrees but cannot vouch
    recs.append({"seed": 21, "phase_range": 8.0, "candidates": {"cnn_raar_er": _cand(False, 2.0, 0.50),
                                                                "fb_cnn_object": _cand(False, 2.0, 0.51),
                                                                "std_cohere": _cand(True, 2.0, 0.40)},
                 "mismatch": {"cnn_raar_er|std_cohere": 0.4, "cnn_raar_er|fb_cnn_object": 0.01,
                              "fb_cnn_object|std_cohere": 0.4}})
    single = GateThresholds(max_mean_to_max=0.55, confirm_mean_to_max=None)
    assert calibrate_gate.confusion(recs, single)["fp"] == 2  # without the zone both wrong ones pass
    thr, conf, strict = calibrate_gate.confirm_zone_choice(recs, single)
    assert thr.confirm_mean_to_max == pytest.approx(0.49)  # the largest 0.01 step below the first wrong one
    assert conf["fp"] == 0 and strict["fp"] == 0
    assert conf["tp"] == strict["tp"] + 1  # the confirmed 0.52 candidate is gained back
    assert thr.max_mismatch == max(calibrate_gate.ZONE_MISMATCHES)  # no wrong pair closer than 0.4


def test_resumed_evaluations_recompute_only_rows_whose_verdicts_change():
    """bench.cnn_eval.verdict_stands: a recorded adaptive row stands when today's gate, replayed on its recorded
    candidates, stops at the same one without an agreement that was not recorded."""
    from bench.cnn_eval import verdict_stands
    from physics.quality import GateThresholds

    fail = {"llk_free": 900.0, "obj2_out": 0.3, "support_ratio": 0.5, "mean_to_max": 0.8}
    clear = {"llk_free": 2.0, "obj2_out": 0.01, "support_ratio": 0.15, "mean_to_max": 0.30}
    zone = dict(clear, mean_to_max=0.52)
    row = {"method": "adaptive", "status": "ok", "candidates": [fail, clear], "nb_candidates": 2}
    assert verdict_stands(row)
    assert not verdict_stands({**row, "candidates": [fail, zone]})  # now needs a partner: recomputed
    assert verdict_stands({**row, "candidates": [fail, zone]}, GateThresholds(confirm_mean_to_max=None))
    assert not verdict_stands({**row, "candidates": [clear, clear]})  # would have stopped at the first
    spent = {"method": "adaptive", "status": "uncertain", "candidates": [fail, fail], "nb_candidates": 2,
             "budget_exhausted": "runs"}
    assert verdict_stands(spent)
    assert not verdict_stands({**spent, "candidates": [fail, zone]})  # a zone candidate might now be confirmed
    assert not verdict_stands(row, GateThresholds(require_agreement=True))
    # a truncated pattern (front-end metadata) needs an independent agreeing start: an older row is recomputed;
    # a row recorded with its limits stands when they are today's for that pattern
    cut = {**row, "frontend": {"truncated": [True, False, False], "warnings": []}}
    assert not verdict_stands(cut)
    assert not verdict_stands({**row, "frontend": {"warnings": ["axis 0: ... (truncated: the plain ..."]}})
    assert verdict_stands({**cut, "thresholds": GateThresholds().for_pattern(True).as_dict()})
    assert not verdict_stands({**cut, "thresholds": GateThresholds().as_dict()})
    assert verdict_stands({**row, "thresholds": GateThresholds().as_dict()})
    # recorded under other limits: replayed like a row without them (a zone-confirmed ok is recomputed)
    older = GateThresholds(confirm_mean_to_max=0.50).as_dict()
    assert verdict_stands({**row, "thresholds": older})
    assert not verdict_stands({**row, "candidates": [fail, zone], "thresholds": older})
    assert verdict_stands({**row, "candidates": [fail, zone], "thresholds": GateThresholds().as_dict()})
    # a row recorded before GateThresholds had amplitude_on ran on the support's mean_to_max: today's limits if
    # the rest agrees, and not when the gate judges the shape's value
    before = {k: v for k, v in GateThresholds().as_dict().items() if k != "amplitude_on"}
    assert verdict_stands({**row, "candidates": [fail, zone], "thresholds": before})
    assert not verdict_stands({**row, "candidates": [fail, zone], "thresholds": before},
                              GateThresholds(amplitude_on="shape"))
    # recorded before the photon-noise share of obj2_out: stands when no candidate's single checks change with it
    faint = dict(zone, obj2_out=0.08, obj2_out_noise=0.1)  # failed obj2_out then, passes it today
    noisy = [dict(fail, obj2_out_noise=0.1), dict(zone, obj2_out_noise=0.001)]
    before = {k: v for k, v in before.items() if k != "obj2_out_noise_weight"}
    assert verdict_stands({**row, "candidates": noisy, "thresholds": before})  # a zone ok confirmed as then
    assert not verdict_stands({**row, "candidates": [faint, noisy[1]], "thresholds": before})  # would stop earlier
    assert not verdict_stands({**row, "candidates": [fail, zone], "thresholds": before})  # share unknown: replayed


def test_rows_measured_against_an_older_autocorrelation_bound_are_replayed_on_todays():
    """bench.cnn_eval.resumed_row: a row whose support ratios were measured against another bound keeps its runs
    only when today's gate, on ratios against today's bound, stops at the same one; it is then appended as such."""
    from types import SimpleNamespace

    from bench.cnn_eval import rebound_row, resumed_row
    from physics.quality import GateThresholds
    from physics.simulate import SimParams, simulate_sample
    from workers.strategy import autocorrelation_bound

    s = simulate_sample(5_900_002, SimParams())
    crop = (s["intensity"], s["mask"], (0, 0, 0), SimpleNamespace(photon_scale=1.0))
    ac = autocorrelation_bound(crop[0], crop[1], crop[3])

    def cand(size, bound, **kw):
        return {"llk_free": 2.0, "obj2_out": 0.01, "mean_to_max": 0.3, "support_size": size,
                "support_ratio": size / bound, "obj2_out_noise": 0.001, **kw}

    fail = cand(int(0.12 * ac), ac, llk_free=900.0)
    today = {"method": "adaptive", "status": "ok", "nb_candidates": 2,
             "candidates": [fail, cand(int(0.12 * ac), ac)]}
    assert rebound_row(today, crop) is None and resumed_row(today, crop) == (True, None)
    # a row recorded before the gate had the photon-noise share of obj2_out: given it from the data, replayed
    before = {**today, "candidates": [{k: v for k, v in c.items() if k != "obj2_out_noise"}
                                      for c in today["candidates"]]}
    stands, row = resumed_row(before, crop)
    assert stands and all(0 < c["obj2_out_noise"] < 0.01 for c in row["candidates"])  # a bright pattern: tiny
    assert row["rebound"] == "noise" and row["thresholds"] == GateThresholds().as_dict()
    # the first candidate failed only on a bound 5x too large (support ratio 0.024): today it passes, so the
    # strategy would have stopped there: rerun
    stale = {**today, "candidates": [cand(int(0.12 * ac), 5 * ac), cand(int(0.12 * ac), 5 * ac)],
             "thresholds": GateThresholds().as_dict()}
    assert resumed_row(stale, crop) == (False, None)
    # a bound 1.5x too large moved nothing that matters: the row stands, appended with today's ratios
    moved = {**today, "candidates": [cand(int(0.12 * ac), 1.5 * ac, llk_free=900.0), cand(int(0.12 * ac), 1.5 * ac)],
             "gate": cand(int(0.12 * ac), 1.5 * ac)}
    stands, row = resumed_row(moved, crop)
    assert stands and row["rebound"] == "bound" and row["ac_size"] == ac
    assert row["candidates"][1]["support_ratio"] == pytest.approx(int(0.12 * ac) / ac)
    assert row["gate"]["support_ratio"] == pytest.approx(int(0.12 * ac) / ac)
    assert row["thresholds"] == GateThresholds().as_dict() and resumed_row(row, crop) == (True, None)
    assert moved["candidates"][1]["support_ratio"] == pytest.approx(int(0.12 * ac) / (1.5 * ac))  # not mutated


def test_wide_calibration_crystals_and_report(tmp_path):
    """--crystals wide draws physics.simulate.WIDE on its own seeds; wide-report sets the shipped gate on them
    beside the paper-family records and says what the shipping rule would choose, shipping nothing."""
    import math

    from physics.simulate import WIDE

    chosen = calibrate_gate.crystals(4, 2, wide=True)
    seeds = [s for s, _ in chosen]
    assert sorted(seeds) == [calibrate_gate.WIDE_HIGH_SEED0 + i for i in range(4)] + [
        calibrate_gate.WIDE_LOW_SEED0, calibrate_gate.WIDE_LOW_SEED0 + 1]
    assert all(p.shapes == WIDE.shapes and p.oversampling == WIDE.oversampling for _, p in chosen)
    assert [p.phase_range for s, p in chosen if s >= calibrate_gate.WIDE_LOW_SEED0] == [(0.2, math.pi)] * 2
    # no seed of the wide calibration is one of the paper calibration's or the evaluation's (2,000,000+)
    assert not set(seeds) & {s for s, _ in calibrate_gate.crystals(300, 300)}
    assert calibrate_gate.main(["wide-report", "--out", str(tmp_path), "--print"]) == 0  # no file yet: says so
    s0 = calibrate_gate.WIDE_HIGH_SEED0
    wide = [{"seed": s0 + i, "phase_range": 8.0, "candidates": {"cnn_raar_er": _cand(True, 2.0)}, "mismatch": {}}
            for i in range(9)]
    wide.append({"seed": s0 + 9, "phase_range": 8.0, "candidates": {"cnn_raar_er": _cand(False, 3.0, 0.50)},
                 "mismatch": {}})  # wrong, passes the shipped single checks
    (tmp_path / calibrate_gate.WIDE_FILE).write_text("\n".join(json.dumps(r) for r in wide))
    text = calibrate_gate.wide_report(type("A", (), {"out": str(tmp_path)})())
    assert "10 simulated 64³ crystals" in text and "Nothing here is shipped" in text
    assert "| wide (10) | shipped, single checks | precision 90.0 %, recall 100.0 % (9 right ok, 1 wrong ok" in text
    assert "paper families" not in text  # no paper-family records in this folder
    assert "The shipping rule on the wide crystals alone: the 100 % floor" in text
    assert "refuse, by check (a candidate can fail several): none." in text  # every right candidate passes them
    assert "mean_to_max of the candidates of both calibration sets (10 crystals" in text
    # the adaptive order replayed per crystal: the wrong one (mean_to_max 0.50) is in the confirmation zone with no
    # partner, so uncertain; the shape's mean_to_max is not recorded here, so not compared
    assert "- wide (10 crystals): 9 right, 9 marked ok, 0 wrong and marked ok, 0 right but uncertain." in text
    assert "on the wide crystals alone: not comparable" in text
    assert "scored on the phasing support in 10 of 10 candidates" in text
    for by in ("peak counts", "mean oversampling"):  # each candidate once in each grouping
        rows = [ln.split(" | ") for ln in text.splitlines() if ln.startswith(f"| {by} |")]
        assert rows and sum(int(r[2]) for r in rows) == 9 and sum(int(r[5]) for r in rows) == 1
    peaks = [calibrate_gate.params_of(s0 + i) for i in range(10)]
    assert all(p.shapes == WIDE.shapes for p in peaks)  # the seeds' own wide conditions, re-simulated
