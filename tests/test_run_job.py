"""The service's job runner end to end against a real Tiled server: ID01 scan in, reconstruction container out."""
import numpy as np
import pytest

from fixtures_tiled import tiled_env  # noqa: F401 - module-scoped real Tiled server with a synthetic ID01 tree
from physics.errors import InputError
from workers.io.tiled_store import read_result
from workers.pipeline import run_job

REF = {"tiled_path": "raw/PtNP/PtNP_0001", "scan": "1.1", "detector": "mpx1x4"}


def _spec(env, job_id, **options):
    return {"job_id": job_id, "scan": REF, "options": {"er_cycles": 40, "crop_size": [32, 32, 32], **options},
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
