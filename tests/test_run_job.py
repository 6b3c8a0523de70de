"""The service's job runner end to end against a real Tiled server: ID01 scan in, reconstruction container out."""
import numpy as np
import pytest

from fixtures_tiled import tiled_env  # noqa: F401 - module-scoped real Tiled server with a synthetic ID01 tree
from physics.errors import InputError
from workers.io.tiled_store import read_result
from workers.pipeline import run_job

REF = {"tiled_path": "raw/PtNP/PtNP_0001", "scan": "1.1", "detector": "mpx1x4"}


def _spec(env, job_id, **options):
    return {"job_id": job_id, "scan": REF, "options": {"method": "cnn-er", "er_cycles": 40, "crop_size": [32, 32, 32], **options},
            "device": "cpu", "tiled": {"url": env["server"].uri, "api_key": env["server"].api_key}}


def test_job_writes_one_complete_result_and_is_idempotent(tiled_env):
    stages = []
    out = run_job(_spec(tiled_env, "job-e2e-1"), progress=lambda s, f: stages.append(s))
    for s in ("read", "preprocess", "cnn", "refine", "strain", "publish"):
        assert s in stages
    path = out["tiled_path"]
    assert path.startswith("reconstructions/PtNP/PtNP_0001/1.1/job-e2e-1") or "job-e2e-1" in path
    arrays, meta = read_result(tiled_env["client"], path)
    for k in ("amplitude", "phase", "phase_wrapped", "support", "object", "reciprocal_phase_predicted",
              "intensity_crop", "displacement", "strain"):
        assert k in arrays, k
    shape = arrays["object"].shape  # 32³ asked; the rocking axis (32 frames, peak at 16) clips it to an even size
    assert arrays["object"].dtype == np.complex64 and shape[1:] == (32, 32) and 16 <= shape[0] <= 32
    assert arrays["support"].shape == arrays["intensity_crop"].shape == shape
    assert arrays["reciprocal_phase_predicted"].shape == (64, 64, 64)
    assert 0 <= arrays["phase_wrapped"].min() and arrays["phase_wrapped"].max() < 2 * np.pi
    assert len(meta["model"]["sha256"]) == 64 and meta["recipe"] == "ER**40"
    assert meta["metrics"]["support_size"] == int(arrays["support"].sum()) > 0
    assert {"read", "cnn", "refine", "strain"} <= set(meta["timings"])
    again = run_job(_spec(tiled_env, "job-e2e-1"))  # a second delivery of the same job
    assert again["tiled_path"] == path
    parent = tiled_env["client"]["/".join(path.split("/")[:-1])]
    assert list(parent).count("job-e2e-1") == 1


def test_bad_reference_writes_nothing(tiled_env):
    spec = _spec(tiled_env, "job-bad-ref")
    spec["scan"] = {**REF, "scan": "9.1"}
    with pytest.raises(InputError):
        run_job(spec)
    with pytest.raises(InputError, match="border_n"):
        run_job(_spec(tiled_env, "job-bad-opt", border_n=-1))


def test_bluesky_run_uid_is_resolved_through_its_start_document(tiled_env):
    """A job naming only a Bluesky run (as the Tiled watcher submits) reads the ID01 scan its start doc names."""
    uid = "0f6c3a1e-5b7d-4d0e-9a51-2c1d7e9b8a11"
    tiled_env["client"].create_container(uid, metadata={"start": {"uid": uid, "plan_name": "bcdi_rocking_scan",
                                                                  "bcdi": REF}})
    spec = _spec(tiled_env, "job-run-uid", er_cycles=10)
    spec["scan"] = {"run_uid": uid}
    out = run_job(spec)
    arrays, meta = read_result(tiled_env["client"], out["tiled_path"])
    assert meta["input"]["run_uid"] == uid and "1.1" in out["tiled_path"]
    spec["scan"] = {"run_uid": "ffffffff-0000-0000-0000-000000000000"}
    with pytest.raises(InputError, match="no Bluesky run"):
        run_job({**spec, "job_id": "job-run-missing"})
    tiled_env["client"].create_container("1a2b3c4d-0000", metadata={"start": {"uid": "1a2b3c4d-0000"}})
    spec["scan"] = {"run_uid": "1a2b3c4d-0000"}
    with pytest.raises(InputError, match="no ID01 scan reference"):
        run_job({**spec, "job_id": "job-run-noref"})
