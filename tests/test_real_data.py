"""bench.real_data's pure helpers: the source registry, the --nb-run parser, the zero-patch mask, the target lines."""
import numpy as np
import pytest

from bench import real_data as rd


def _rec(method, **kw):
    base = {"method": method, "llk": 20.0, "llk_free": 40.0, "support": 3000, "obj2_out": 0.01}
    return {**base, **kw}


def test_every_source_names_its_licence_and_default_runs():
    assert set(rd.SOURCES) == {"aps64", "id01_sim"}
    for name, src in rd.SOURCES.items():
        assert src.name == name and src.licence and src.label and src.nb_run >= 1 and callable(src.load)


def test_nb_run_accepts_one_number_or_per_source_values():
    assert rd.parse_runs(None) == {"aps64": 20, "id01_sim": 4}
    assert rd.parse_runs(["3"]) == {"aps64": 3, "id01_sim": 3}
    assert rd.parse_runs(["id01_sim=2"]) == {"aps64": 20, "id01_sim": 2}
    with pytest.raises(SystemExit, match="unknown source"):
        rd.parse_runs(["nope=2"])


def test_zero_patch_is_the_largest_zero_block_not_scattered_zeros():
    a = np.ones((16, 16, 16), np.float32)
    a[2:6, 2:6, 2:6] = 0  # the zero-filled patch, 64 voxels
    a[12, 12, 12] = a[0, 15, 3] = 0  # genuine zero counts
    m = rd.zero_patch_mask(a)
    assert m.sum() == 64 and m[3, 3, 3] and not m[12, 12, 12]


def test_best_standard_is_the_lowest_free_llk_of_either_engine():
    rows = {"cnn_er": _rec("cnn_er", llk_free=1.0), "standard_builtin": _rec("standard_builtin", llk_free=50.0),
            "standard_pynx_best": _rec("standard_pynx_best", llk_free=30.0)}
    assert rd.best_standard(rows)["method"] == "standard_pynx_best"
    assert rd.best_standard({"cnn_er": rows["cnn_er"]}) is None


def test_target_lines_say_met_or_missed_for_each_target():
    ref = _rec("standard_builtin_best", llk=20.0, support=3000)
    good = _rec("adaptive", llk=21.0, support=3300, obj2_out=0.05)
    lines = rd.target_lines({"standard_builtin_best": ref, "adaptive": good}, has_truth=False)
    assert len(lines) == 3 and all(line.startswith("- met:") for line in lines)
    bad = _rec("adaptive", llk=30.0, support=4000, obj2_out=0.2)  # volume 1.33, obj2_out 0.2, LLK 50 % apart
    lines = rd.target_lines({"standard_builtin_best": ref, "adaptive": bad}, has_truth=False)
    assert len(lines) == 3 and all(line.startswith("- missed:") for line in lines)
    truth_rows = {"standard_builtin": _rec("standard_builtin", volume_ratio_truth=1.1, phase_rmse=0.3),
                  "adaptive": _rec("adaptive", volume_ratio_truth=0.7, phase_rmse=0.3)}
    lines = rd.target_lines(truth_rows, has_truth=True)
    assert lines[0].startswith("- met: (c) standard, built-in") and lines[1].startswith("- missed: adaptive")
    assert len(lines) == 5  # two truth lines, three against the best standard result


def test_shared_data_folder_is_found_from_a_worktree():
    shared = rd.find_shared()
    if not (shared / "data").is_dir():
        pytest.skip("shared data not present")
    assert (shared / "data" / "aps_34idc_crystal_64" / "ft_crop_64.tif").is_file()


def test_cached_rows_are_keyed_by_the_runs_of_their_engine():
    assert rd.run_key("cnn_er", 20, 8) is None and rd.run_key("adaptive", 20, None) is None
    assert rd.run_key("standard_builtin", 20, 8) == 20 and rd.run_key("standard_pynx", 20, 8) == 8
    assert rd.run_key("standard_pynx", 20, None) == 20


def test_adaptive_rows_stand_only_under_todays_gate_and_bound():
    """A cached adaptive row reruns when it was judged under other limits or another autocorrelation bound; rows
    of methods the gate does not steer always stand."""
    from physics.simulate import SimParams, simulate_sample
    from workers.pipeline import crop_for_cnn
    from workers.strategy import StrategyOptions, autocorrelation_bound, thresholds_for

    s = simulate_sample(5, SimParams())
    i_crop, m_crop, _, fe = crop_for_cnn(s["intensity"], s["mask"])
    ac = autocorrelation_bound(i_crop, m_crop, fe)
    today = thresholds_for(StrategyOptions().thresholds, fe).as_dict()
    row = {"method": "adaptive", "thresholds": today, "gate": {"support_size": 600, "support_ratio": 600 / ac}}
    assert rd.gate_stands(row, i_crop, m_crop, fe)
    assert not rd.gate_stands({**row, "thresholds": {**today, "max_obj2_out": 0.02}}, i_crop, m_crop, fe)
    assert not rd.gate_stands({**row, "gate": {"support_size": 600, "support_ratio": 600 / (2 * ac)}},
                              i_crop, m_crop, fe)
    assert not rd.gate_stands({"method": "adaptive", "status": "ok"}, i_crop, m_crop, fe)  # from before the fields
    assert rd.gate_stands({"method": "cnn_er"}, i_crop, m_crop, fe)
