"""bench/calibrate_gate.py and bench/adaptive_eval.py end to end on tiny settings in a temporary folder."""
import json

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
    return {"success": success, "llk_free": llk_free, "obj2_out": 0.01, "mean_to_max": m2m, "support_ratio": 0.15}


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
