"""The one schedule, the operator chain both engines run, and batched random starts (physics.phasing)."""
import numpy as np
import pytest

from physics.errors import InputError
from physics.phasing import (CDI, ER, HIO, LLK, BuiltinEngine, PhaseConfig, SupportTooSmall, SupportUpdate, phase_runs,
                             run_recipe, schedule, to_operator)
from physics.phasing.schedule import resolve_smooth_width
from tests.test_phasing import crystal
from workers.engines import pynx_child
from workers.engines.pynx_engine import compile_recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def xtal():
    return crystal()


def test_schedule_inserts_periodic_updates_and_zero_mask_phases():
    s = schedule("HIO**50,ER**10", 20, zero_mask="auto")
    assert [tuple(g) for g in s.segments] == [("HIO", 20, True), ("Sup", 1, False), ("HIO", 10, True),
                                             ("HIO", 10, False), ("Sup", 1, False), ("HIO", 10, False),
                                             ("ER", 10, False), ("Sup", 1, False)]
    assert (s.nb_cycles, s.nb_hio_raar, s.explicit_sup) == (60, 50, False)
    assert all(not g.zero_mask for g in schedule("HIO**50", 20, "auto", has_mask=False).segments)
    assert [g.name for g in schedule("ER**10,(Sup*ER**5)**2", 4).segments] == ["ER", "Sup", "ER", "Sup"]
    assert schedule("ER**45", 20, support_update=False).as_lists() == [["ER", 45, False]]
    assert resolve_smooth_width((2.0, 0.5, None), s, start_cycle=7) == (2.0, 0.5, 57)
    with pytest.raises(InputError, match="zero_mask"):
        schedule("ER**3", 20, zero_mask="sometimes")


def test_both_engines_get_the_same_schedule():
    """PyNX's segments are the built-in schedule's, and the operator chain reads like PyNX's chain string."""
    sched = schedule("RAAR**30,ER**30", 20)
    segments, _ = compile_recipe("RAAR**30,ER**30", 20, dict(threshold_relative=0.25))
    assert segments == sched.as_lists()
    op = to_operator(sched, SupportUpdate())
    assert repr(op) == "Sup*(ER)**20*Sup*(ER)**10*(RAAR)**10*Sup*(RAAR)**20"
    assert pynx_child.chain_string(segments) == "Sup*ER**20*Sup*ER**10*RAAR**10*Sup*RAAR**20"
    assert op.nb_cycles() == sched.nb_cycles == 60


def test_run_recipe_is_the_operator_chain(xtal):
    """run_recipe = schedule -> to_operator -> op * cdi: the same state as writing the chain by hand."""
    rng = np.random.default_rng(0)
    start = xtal["obj"] * np.exp(1j * rng.normal(0, 0.5, xtal["obj"].shape))
    a = CDI(xtal["iobs"], obj=start, support=xtal["support"])
    run_recipe(a, "ER**10", SupportUpdate(threshold_relative=0.25, smooth_width=1.0), update_period=5)
    b = CDI(xtal["iobs"], obj=start, support=xtal["support"])
    sup = SupportUpdate(threshold_relative=0.25, smooth_width=1.0)
    (sup * ER() ** 5) ** 2 * b
    np.testing.assert_array_equal(a.get_support(), b.get_support())
    np.testing.assert_allclose(a.get_obj(), b.get_obj(), atol=1e-6 * np.abs(a.get_obj()).max())


def test_er_sparse_support_path_equals_the_dense_multiply(xtal):
    """An ER cycle on an object already 0 outside a small support copies only the support voxels back: same
    result as multiplying P_M(obj) by the support."""
    rng = np.random.default_rng(1)
    start = xtal["obj"] * np.exp(1j * rng.normal(0, 0.5, xtal["obj"].shape))
    fast = CDI(xtal["iobs"], obj=start, support=xtal["support"])
    assert fast._support_idx is not None  # the crystal fills well under a quarter of the box
    ER() ** 4 * fast
    slow = CDI(xtal["iobs"], obj=start, support=xtal["support"])
    slow._support_idx = None  # force the dense path
    for _ in range(4):
        slow._support_idx = None
        ER() * slow
    np.testing.assert_allclose(fast.get_obj(), slow.get_obj(), atol=1e-5 * np.abs(slow.get_obj()).max())
    assert not fast.get_obj()[~xtal["support"]].any()


def test_batched_state_matches_runs_one_at_a_time(xtal):
    rng = np.random.default_rng(2)
    starts = [xtal["obj"] * np.exp(1j * rng.normal(0, 0.8, xtal["obj"].shape)) for _ in range(3)]
    thresholds = [0.2, 0.25, 0.3]
    batch = CDI(xtal["iobs"], obj=np.stack(starts), support=xtal["support"])
    assert batch.batch == 3 and batch.get_obj().shape == (3,) + xtal["iobs"].shape
    run_recipe(batch, "RAAR**10,ER**10", SupportUpdate(threshold_relative=thresholds, smooth_width=1.0),
               update_period=5)
    llks = (LLK() * batch).get_llk()
    for i, (start, thr) in enumerate(zip(starts, thresholds)):
        one = CDI(xtal["iobs"], obj=start, support=xtal["support"])
        run_recipe(one, "RAAR**10,ER**10", SupportUpdate(threshold_relative=thr, smooth_width=1.0), update_period=5)
        llk = (LLK() * one).get_llk()
        assert (batch.get_support()[i] == one.get_support()).mean() > 0.999
        np.testing.assert_allclose(batch.get_obj()[i], one.get_obj(), atol=1e-3 * np.abs(one.get_obj()).max())
        assert llks[i]["llk_poisson"] == pytest.approx(llk["llk_poisson"], rel=1e-3)
        assert batch.support_threshold[i] == pytest.approx(one.support_threshold)


def test_a_diverging_run_of_a_batch_is_recorded_not_raised(xtal):
    batch = CDI(xtal["iobs"], obj=np.stack([xtal["obj"]] * 2), support=xtal["support"])
    SupportUpdate(threshold_relative=[0.25, 50.0], smooth_width=0.5, retune=False) * batch
    assert list(batch.failed) == [1] and isinstance(batch.failed[1], SupportTooSmall)
    one = CDI(xtal["iobs"], obj=xtal["obj"], support=xtal["support"])
    SupportUpdate(threshold_relative=0.25, smooth_width=0.5, retune=False) * one
    np.testing.assert_array_equal(batch.get_support()[0], one.get_support())
    np.testing.assert_array_equal(batch.get_support()[1], xtal["support"])  # the failed run keeps its support
    with pytest.raises(SupportTooSmall):  # every run of the batch diverged: stop at once
        SupportUpdate(threshold_relative=[50.0, 50.0], smooth_width=0.5, retune=False) * batch


def test_phase_runs_batched_gives_the_same_runs_as_unbatched(xtal):
    """batch=3: the 4 runs go as one batch of 3 and one of 1; every run's figures match the one-at-a-time ones."""
    cfg = dict(recipe="HIO**40,RAAR**40,ER**40", nb_run=4, nb_keep=2, seed=3)
    calls = []
    single = phase_runs(xtal["iobs"], config=PhaseConfig(**cfg, batch=1))
    batched = phase_runs(xtal["iobs"], config=PhaseConfig(**cfg, batch=3), engine=BuiltinEngine(),
                         progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (4 * 120, 4 * 120) and all(d <= t for d, t in calls)
    for a, b in zip(single.runs, batched.runs):
        assert a["status"] == b["status"] and a["threshold_start"] == b["threshold_start"]
        assert b["llk_poisson"] == pytest.approx(a["llk_poisson"], rel=1e-2)
        assert b["support_size"] == pytest.approx(a["support_size"], rel=1e-2)
    assert batched.kept == single.kept
    assert np.abs(np.vdot(batched.obj, single.obj)) / (np.linalg.norm(batched.obj) * np.linalg.norm(single.obj)) \
        > 0.999


def test_phase_config_rejects_bad_settings():
    with pytest.raises(InputError, match="batch"):
        PhaseConfig(batch=0)
    with pytest.raises(InputError, match="threshold_range"):
        PhaseConfig(threshold_range=(0.4, 0.1))
    with pytest.raises(InputError, match="nb_run"):
        PhaseConfig(nb_run=0)


def test_sparse_data_projection_equals_the_dense_one():
    """Where most observed voxels have Iobs = 0, the projection only touches the others; same result as the dense
    path, with masked and free voxels kept (zero_mask False) or forced to 0 (zero_mask True), in any order."""
    x = crystal(n=32, counts=2e2, seed=5)  # faint: most voxels count 0
    mask = np.zeros(x["iobs"].shape, bool)
    mask[:, 14:16, :] = True
    rng = np.random.default_rng(3)
    start = (x["obj"] * np.exp(1j * rng.normal(0, 0.5, x["obj"].shape))).astype(np.complex64)
    sparse = CDI(x["iobs"], mask=mask, obj=start, support=x["support"])
    dense = CDI(x["iobs"], mask=mask, obj=start, support=x["support"])
    from physics.phasing import InitFreePixels

    InitFreePixels(seed=2) * sparse
    dense.set_free_mask(sparse.get_free_mask())
    dense._lit_idx = None
    assert sparse._lit_idx is not None and sparse._lit_idx.numel() < 0.5 * x["iobs"].size
    for zero_mask in (False, True, False, True):
        sparse.zero_mask = dense.zero_mask = zero_mask
        a, b = sparse._project().numpy(), dense._project().numpy()
        np.testing.assert_allclose(a, b, atol=1e-6 * np.abs(b).max())
        HIO() * sparse
        HIO() * dense
