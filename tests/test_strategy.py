"""The adaptive strategy (workers/strategy.py): it stops after the CNN candidates when they pass the gate, falls
back to standard runs when they do not, honours its budget, and marks the result uncertain when nothing passes.
The "CNN" here is a predictor of the true reciprocal phase (a perfect network) or of a random phase (a useless
one), so that the outcome of the CNN step is known without depending on the shipped model's quality."""
import math

import numpy as np
import pytest

from physics.errors import InputError
from physics.quality import GateThresholds
from physics.simulate import SimParams, simulate_sample
from workers.pipeline import ReconOptions
from workers.strategy import METHODS, StrategyOptions, run_method, summary_line

FAST = dict(recon=ReconOptions(er_cycles=100), pre_recipe="RAAR**50", fallback_recipe="HIO**100,RAAR**200,ER**100",
            seeded_recipe="RAAR**150,ER**100")


@pytest.fixture(scope="module")
def easy():
    return simulate_sample(5_900_002, SimParams(phase_range=(0.3, 1.0)))


def true_phase(sample):
    return lambda i64: sample["phase"]


def random_phase(i64):
    return np.random.default_rng(0).uniform(-np.pi, np.pi, i64.shape).astype(np.float32)


def _truth_ok(res, sample):
    from bench.cnn_eval import _success, _truth_metrics

    return _success(_truth_metrics(res.result.obj, res.result.support, sample))


def test_adaptive_stops_after_the_cnn_candidate_when_it_passes(easy, one_torch_thread):
    res = run_method("adaptive", easy["intensity"], easy["mask"], true_phase(easy), StrategyOptions(**FAST))
    c = res.confidence
    assert c["status"] == "ok" and not c["fallback_ran"], c
    assert c["nb_candidates"] == 1 and c["winner"] == "cnn-raar-er"
    assert c["hint"] is None and c["budget_exhausted"] is None
    assert _truth_ok(res, easy)
    assert "ok" in summary_line(res) and "cnn-raar-er" in summary_line(res)
    # with the agreement requirement, two CNN candidates that agree pass together, and their modes are combined
    opts = StrategyOptions(**FAST, cnn_candidates=("cnn-raar-er", "cnn-er"),
                           thresholds=GateThresholds(require_agreement=True))
    res = run_method("adaptive", easy["intensity"], easy["mask"], true_phase(easy), opts)
    c = res.confidence
    assert c["status"] == "ok" and not c["fallback_ran"] and c["nb_candidates"] == 2, c
    assert c["gate"]["mismatch"] is not None and c["gate"]["mismatch"] <= GateThresholds().max_mismatch
    assert c["first_mode_weight"] > 0.9


def test_adaptive_falls_back_when_the_cnn_fails(easy, one_torch_thread):
    opts = StrategyOptions(**FAST, max_runs=4)
    res = run_method("adaptive", easy["intensity"], easy["mask"], random_phase, opts)
    c = res.confidence
    names = [x["name"] for x in res.candidates]
    assert names[0] == "cnn-raar-er" and c["fallback_ran"]
    assert res.candidates[0]["status"] == "uncertain"
    assert 1 <= len(names) - 1 <= 4
    assert c["status"] == "ok", c  # an easy crystal: a standard run passes within the budget
    assert c["winner"].startswith("standard-run-") and _truth_ok(res, easy)
    # it stopped at the first run that passed: every earlier run was uncertain
    assert res.candidates[-1]["status"] == "ok"
    assert all(x["status"] == "uncertain" for x in res.candidates[:-1])
    assert [x["seeding"] for x in res.candidates[1:]] == list(opts.seedings[:len(names) - 1])
    # the first run from the CNN's object uses the shorter seeded recipe, the others the full one
    for x in res.candidates[1:]:
        want = opts.seeded_recipe if x["name"] == "standard-run-1" else opts.fallback_recipe
        assert x["recipe"] == f"cohere-style {want}", x


def test_a_truncated_pattern_needs_an_independent_start_that_agrees(easy, one_torch_thread):
    """The limits of a pattern the front end reports truncated (GateThresholds.for_pattern(True), which the
    strategies take from FrontEnd.truncated: tests/test_frontend.py): even a perfect CNN candidate is not 'ok' alone,
    nor with the run seeded from its own object (same start); a run from the autocorrelation that agrees makes
    both ok."""
    untruncated = run_method("adaptive", easy["intensity"], easy["mask"], true_phase(easy), StrategyOptions(**FAST))
    assert not untruncated.confidence["thresholds"]["require_agreement"]  # 64³, not cut: the calibrated gate
    opts = StrategyOptions(**FAST, max_runs=4, thresholds=GateThresholds().for_pattern(True))
    res = run_method("adaptive", easy["intensity"], easy["mask"], true_phase(easy), opts)
    c, cands = res.confidence, res.candidates
    assert c["status"] == "ok" and c["fallback_ran"], c
    assert cands[0]["name"] == "cnn-raar-er" and cands[1]["seeding"] == "cnn_object"
    assert any(x["seeding"] == "autocorrelation" and x["status"] == "ok" for x in cands[2:]), cands
    assert c["gate"]["mismatch"] <= GateThresholds().max_mismatch and _truth_ok(res, easy)
    assert GateThresholds().for_pattern(False) == GateThresholds()


def test_the_hint_names_the_cut_axis_only_on_a_truncated_pattern():
    """An uncertain result whose best candidate passed every single check on a cut scan lacked only an agreeing
    start: the hint says so and names the axis; asking for agreement on an uncut pattern does not claim a cut."""
    from physics.quality import judge
    from workers.strategy import Candidate, _hint

    vals = {"llk_free": 2.0, "obj2_out": 0.01, "support_ratio": 0.15, "mean_to_max": 0.30}
    thr = GateThresholds().for_pattern(True)
    status, why = judge(vals, thr, None)
    best = Candidate("cnn-raar-er", None, None, {}, vals, 1.0, status=status, reasons=why)
    assert status == "uncertain"
    assert "cut at the ends of the array (axis 0)" in _hint(best, thr, "runs", 6, 0.0, (True, False, False))
    assert "cut" not in _hint(best, thr, "runs", 6, 0.0, (False, False, False))
    failing = Candidate("cnn-raar-er", None, None, {}, dict(vals, obj2_out=0.3), 1.0)
    assert "cut" not in _hint(failing, thr, "runs", 6, 0.0, (True, False, False))  # it failed a check itself


def test_budget_is_honoured_and_nothing_passing_is_uncertain(easy, one_torch_thread):
    never = GateThresholds(max_llk_free=1e-6)  # no reconstruction can pass
    res = run_method("adaptive", easy["intensity"], easy["mask"], random_phase,
                     StrategyOptions(**FAST, max_runs=1, thresholds=never))
    c = res.confidence
    assert c["status"] == "uncertain" and c["budget_exhausted"] == "runs"
    assert c["nb_candidates"] == 2 and c["fallback_ran"]
    assert c["hint"] and "more runs" in c["hint"] and res.result.warnings[-1] == c["hint"]
    assert res.result.obj.shape == easy["intensity"].shape  # the best candidate is still returned

    # the rotation comes back to the CNN's object at run 5: that start has no random seed, so it runs the full
    # recipe instead of repeating run 1
    res = run_method("adaptive", easy["intensity"], easy["mask"], random_phase,
                     StrategyOptions(**FAST, max_runs=5, thresholds=never))
    runs = res.candidates[1:]
    assert [x["seeding"] for x in runs] == ["cnn_object", "autocorrelation", "cnn_support", "autocorrelation",
                                            "cnn_object"]
    assert runs[0]["recipe"] == f"cohere-style {FAST['seeded_recipe']}"
    assert all(x["recipe"] == f"cohere-style {FAST['fallback_recipe']}" for x in runs[1:])
    assert runs[4]["llk_free"] != runs[0]["llk_free"]  # not the same run again

    res = run_method("adaptive", easy["intensity"], easy["mask"], random_phase,
                     StrategyOptions(**FAST, max_runs=5, max_seconds=1e-3, thresholds=never))
    assert res.confidence["budget_exhausted"] == "seconds" and res.confidence["nb_candidates"] == 1
    assert not res.confidence["fallback_ran"]


def test_run_method_dispatch(easy, one_torch_thread):
    assert METHODS == ("cnn-er", "cnn-raar-er", "standard", "adaptive")
    res = run_method("cnn-er", easy["intensity"], easy["mask"], true_phase(easy),
                     StrategyOptions(**FAST, thresholds=GateThresholds(require_agreement=True)))
    assert res.confidence["nb_candidates"] == 1 and res.confidence["winner"] == "cnn-er"
    # one candidate alone cannot show agreement: the gate says uncertain, and says why
    assert res.confidence["status"] == "uncertain"
    assert "no second candidate" in " ".join(res.confidence["reasons"])
    res = run_method("standard", easy["intensity"], easy["mask"], None,
                     StrategyOptions(recon=ReconOptions(), nb_run=2, nb_keep=2,
                                     standard_recipe="HIO**60,RAAR**150,ER**60"))
    assert res.confidence["winner"] == "standard" and res.result.phase_cnn is None
    assert res.confidence["gate"]["mismatch"] is not None
    with pytest.raises(InputError, match="unknown method"):
        run_method("genetic", easy["intensity"], easy["mask"], None)
    with pytest.raises(InputError, match="needs the CNN"):
        run_method("adaptive", easy["intensity"], easy["mask"], None)
    with pytest.raises(InputError):
        StrategyOptions(max_runs=-1)
    with pytest.raises(InputError, match="recipe"):
        StrategyOptions(seeded_recipe="")


def test_fallback_plan_rotates_the_seedings_and_never_repeats_the_cnn_object_run():
    from workers.strategy import SEEDED_RECIPE, STANDARD_RECIPE, fallback_plan

    opts = StrategyOptions()
    plan = [fallback_plan(k, opts) for k in range(6)]
    assert [k for k, _ in plan] == [opts.seedings[k % len(opts.seedings)] for k in range(6)]
    assert plan[0] == ("cnn_object", SEEDED_RECIPE)  # the first run from the CNN's object: the short recipe
    assert plan[4] == ("cnn_object", STANDARD_RECIPE)  # the rotation's second one: the full recipe
    assert all(r == STANDARD_RECIPE for k, r in plan[1:4])
