"""bench/calibrate_gate.py and bench/adaptive_eval.py end to end on tiny settings in a temporary folder."""
import json

from bench import adaptive_eval, calibrate_gate


def test_calibration_end_to_end_and_resume(tmp_path, one_torch_thread, capsys):
    args = ["run", "--n-high", "1", "--n-low", "1", "--out", str(tmp_path), "--er-cycles", "20",
            "--recipe", "HIO**20,RAAR**20,ER**10", "--pynx-high", "1"]
    assert calibrate_gate.main(args) == 0
    path = tmp_path / calibrate_gate.FILE
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["seed"] for r in recs) == [calibrate_gate.HIGH_SEED0, calibrate_gate.LOW_SEED0]
    high = next(r for r in recs if r["seed"] == calibrate_gate.HIGH_SEED0)
    low = next(r for r in recs if r["seed"] == calibrate_gate.LOW_SEED0)
    assert set(high["candidates"]) == set(calibrate_gate.CANDIDATES)
    assert set(low["candidates"]) == {"cnn_er", "cnn_raar_er", "std_cohere"}
    assert "std_pynx" not in low["candidates"]  # PyNX-style only on the first --pynx-high 2π-5π crystals
    for r in recs:
        for v in r["candidates"].values():
            assert {"llk_free", "obj2_out", "support_ratio", "mean_to_max", "sharpness", "chi", "phase_rmse",
                    "iou", "success", "seconds"} <= set(v)
        n = len(r["candidates"])
        assert len(r["mismatch"]) == n * (n - 1) // 2
        assert all(0 <= m <= 1 for m in r["mismatch"].values())
    assert calibrate_gate.main(args) == 0  # resumes: nothing recomputed, nothing duplicated
    assert len(path.read_text().splitlines()) == 2
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
