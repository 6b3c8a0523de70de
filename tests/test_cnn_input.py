"""bench.cnn_input's report from records: the coherence table, the matched-sampling line and the target decision
(the computations themselves run the real front end and network; see bench/cnn_input.py)."""
import argparse
import json

from bench import cnn_input


def _write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_report_tables_inputs_and_says_what_a_target_changed(tmp_path):
    _write(tmp_path / "cnn_input_128.jsonl", [
        {"seed": s, "size": "128", "model": "m-1", "frontend": f, "fourier": f, "ideal": f + 0.01, "native64": 0.3}
        for s, f in ((1, 0.1), (2, 0.2), (3, 0.3))])

    def tgt(seed, target, ok_b, crop):
        return {"seed": seed, "size": "128", "target": target, "rev": "abc", "phase_range": 8.0,
                "cnn_er": {"success": ok_b, "phase_rmse": 0.4 if ok_b else 1.2, "iou": 0.8, "crop": crop,
                           "oversampling_cnn": [3.0, 3.0, 3.0]},
                "cnn_raar_er": {"success": True, "phase_rmse": 0.3, "iou": 0.8, "crop": crop,
                                "oversampling_cnn": [3.0, 3.0, 3.0]}}

    _write(tmp_path / "cnn_target_128_default.jsonl", [tgt(5, None, False, [100] * 3), tgt(6, None, True, [100] * 3)])
    _write(tmp_path / "cnn_target_128_3.6.jsonl", [tgt(5, 3.6, True, [80] * 3), tgt(6, 3.6, True, [80] * 3)])
    text = cnn_input.report(argparse.Namespace(out=str(tmp_path)))
    assert "| the front end's (binned or Fourier-resampled crop) | 0.200 | 0.200 |" in text
    assert "| an ideal 64³ pattern of the same object (Poisson, same peak) | 0.210 | 0.210 |" in text
    assert "| 128 | 3.6 | abc | 2 | 2/2 | 2/2 |" in text and "| 128 | default (default) | abc | 2 | 1/2 | 2/2 |" in text
    assert "target 3.6 against the default rule on the same 2 crystals: (b) +1, (b+) +0 successes, median crop " \
           "volume × 0.51" in text
