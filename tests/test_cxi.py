"""CXI results: h5py round trip, atomic writes, and real readers (silx, PyNX's own loader) in Debian's python3.

Also the PNG previews, which are written next to the CXI by `bcdi-recon phase --previews`.
"""
import json
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from physics.errors import InputError
from workers.io.cxi import read_cxi, write_cxi
from workers.io.previews import reciprocal_phase, render_previews, save_png

SYSTEM_PYTHON = "/usr/bin/python3"


def _system_has(module: str) -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    r = subprocess.run([SYSTEM_PYTHON, "-c", f"import {module}"], capture_output=True, env={"PYNX_PU": "cpu"})
    return r.returncode == 0


@pytest.fixture(scope="module")
def result():
    """A small crystal with a phase ramp, its diffraction and a support."""
    z, y, x = np.mgrid[-16:16, -16:16, -16:16]
    support = (z ** 2 + y ** 2 + x ** 2) < 8 ** 2
    obj = (support * np.exp(1j * (0.3 * x + 0.1 * z))).astype(np.complex64)
    iobs = (np.abs(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj), norm="ortho"))) ** 2 * 100).astype(np.float32)
    mask = np.zeros(obj.shape, bool)
    mask[:, 15:17, :] = True
    return obj, support, iobs, mask


def _write(path, result, **kw):
    obj, support, iobs, mask = result
    return write_cxi(path, obj, support, iobs=iobs, mask=mask,
                     process={"recipe": "HIO**40,ER**20", "engine": "builtin", "seed": 3,
                              "support_threshold": (0.15, 0.4)},
                     results={"llk_poisson": 1.25, "llk_poisson_free": 1.5, "obj2_out": 0.02,
                              "timings": {"phasing_s": 2.5}},
                     free_mask=mask[::-1], crop_offsets=(1, 2, 3), command="bcdi-recon phase x", **kw)


def _derived(result):
    """Displacement and strain-like real-space maps on the object grid (what `reconstruct` writes)."""
    obj, support = result[0], result[1]
    disp = np.where(support, np.angle(obj), 0).astype(np.float32)
    return {"displacement": (disp, "rad"), "strain": (np.gradient(disp, axis=0).astype(np.float32), "rad/voxel")}


def test_derived_maps_round_trip(tmp_path, result):
    derived = _derived(result)
    path = _write(tmp_path / "d.cxi", result, derived=derived)
    d = read_cxi(path)
    assert sorted(d["derived"]) == ["displacement", "strain"]
    for name, (arr, units) in derived.items():
        np.testing.assert_array_equal(d["derived"][name], arr)
    with h5py.File(path) as f:
        assert f["entry_1/image_3/data"].attrs["units"] == "rad" and f["entry_1/image_4/data_space"][()] == b"real"
    np.testing.assert_array_equal(d["obj"], result[0])  # object and intensity stay where they were
    np.testing.assert_array_equal(d["iobs"], result[2])
    assert read_cxi(_write(tmp_path / "plain.cxi", result))["derived"] == {}
    with pytest.raises(ValueError, match="strain shape"):
        _write(tmp_path / "bad.cxi", result, derived={"strain": (np.zeros((2, 2, 2)), "")})
    assert not (tmp_path / "bad.cxi").exists()


def test_round_trip_and_layout(tmp_path, result):
    obj, support, iobs, mask = result
    path = _write(tmp_path / "r.cxi", result)
    assert [p.name for p in tmp_path.iterdir()] == ["r.cxi"]
    d = read_cxi(path)
    assert d["obj"].dtype == np.complex64
    np.testing.assert_array_equal(d["obj"], obj)
    np.testing.assert_array_equal(d["support"], support)
    np.testing.assert_array_equal(d["iobs"], iobs)
    np.testing.assert_array_equal(d["mask"], mask)
    assert d["process"]["recipe"] == "HIO**40,ER**20" and d["process"]["seed"] == 3
    np.testing.assert_allclose(d["process"]["support_threshold"], [0.15, 0.4])
    np.testing.assert_array_equal(d["process"]["crop_offsets"], [1, 2, 3])
    assert d["results"]["free_llk_poisson"] == 1.5 and d["results"]["llk_poisson_free"] == 1.5
    assert d["results"]["timings"]["phasing_s"] == 2.5
    assert d["results"]["nb_point_support"] == support.sum()
    assert d["program"].startswith("bcdi-recon")
    with h5py.File(path) as f:
        assert f["cxi_version"][()] == 160
        assert f["entry_1"].attrs["NX_class"] == "NXentry"
        assert f["entry_1/data_1"].attrs["signal"] == "data"
        assert f.get("entry_1/data_1/data", getlink=True).path == "/entry_1/image_1/data"
        assert f.get("entry_1/image_1/support", getlink=True).path == "/entry_1/image_1/mask"
        assert f["entry_1/image_1/process_1/command"][()] == b"bcdi-recon phase x"
        np.testing.assert_array_equal(f["entry_1/image_1/process_1/configuration/free_pixel_mask"][()], mask[::-1])
        # PyNX would read a file with this dataset as *data*, not a result
        assert "entry_1/instrument_1/detector_1/data" not in f


def test_process_values_of_any_type(tmp_path, result):
    """Callers pass whatever their options hold: mixed lists, None, nested dicts, a crop_offsets entry."""
    obj, support = result[0], result[1]
    path = write_cxi(tmp_path / "r.cxi", obj, support, crop_offsets=(4, 5, 6),
                     process={"crop_offsets": [1, 2, 3], "mixed": ["a", 1], "none": None, "ragged": [[1], [1, 2]],
                              "nested": {"x": 1.5, "y": "z"}, "flag": True, "names": ("a", "b")})
    p = read_cxi(path)["process"]
    np.testing.assert_array_equal(p["crop_offsets"], [4, 5, 6])
    assert p["mixed"] == "['a', 1]" and "none" not in p and p["ragged"] == "[[1], [1, 2]]"
    assert p["nested"] == {"x": 1.5, "y": "z"} and p["flag"] is True and p["names"] == "a,b"


def test_our_cxi_is_valid_input_for_phase(tmp_path, result):
    """The intensity stored in a result can be phased again (read_intensity finds image_2 by default)."""
    from workers.io.formats import read_intensity

    path = _write(tmp_path / "r.cxi", result)
    np.testing.assert_array_equal(read_intensity(f"{path}:/entry_1/image_2/data"), result[2])
    np.testing.assert_array_equal(read_intensity(path), result[2])


def test_atomic_and_errors(tmp_path, result):
    obj, support, iobs, mask = result
    with pytest.raises(InputError, match="does not exist"):
        write_cxi(tmp_path / "no" / "r.cxi", obj, support)
    with pytest.raises(ValueError, match="support shape"):
        write_cxi(tmp_path / "r.cxi", obj, support[:-1])
    with pytest.raises(ValueError, match="complex"):
        write_cxi(tmp_path / "r.cxi", np.abs(obj), support)
    # a failure while writing leaves neither the file nor a temp file
    with pytest.raises(ValueError):
        write_cxi(tmp_path / "r.cxi", obj, support, results={"bad": b"nul\x00inside"})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="not found"):
        read_cxi(tmp_path / "nope.cxi")
    np.save(tmp_path / "x.npy", obj)
    with pytest.raises(InputError, match="not a readable"):
        read_cxi(tmp_path / "x.npy")


@pytest.mark.skipif(not _system_has("silx.io"), reason="Debian's python3-silx is not installed in /usr/bin/python3")
def test_readable_by_silx(tmp_path, result):
    """silx (the ESRF viewer library) opens the file, finds the default NXdata and reads object and support."""
    path = _write(tmp_path / "r.cxi", result, derived=_derived(result))  # extra images must not confuse it
    code = """
import json, sys
import numpy as np
import silx.io
from silx.io import nxdata
with silx.io.open(sys.argv[1]) as f:
    default = nxdata.get_default(f)
    obj = f["entry_1/data_1/data"][()]
    print(json.dumps({
        "default_shape": list(default.signal.shape), "default_dtype": str(default.signal.dtype),
        "valid": [nxdata.is_valid_nxdata(f[p]) for p in ("entry_1/data_1", "entry_1/image_1", "entry_1/image_2")],
        "support": int(np.count_nonzero(f["entry_1/image_1/mask"][()])),
        "abs_sum": float(np.abs(obj).sum()),
        "llk_free": float(f["entry_1/image_1/process_1/results/free_llk_poisson"][()]),
    }))
"""
    r = subprocess.run([SYSTEM_PYTHON, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    obj, support = result[0], result[1]
    assert out["default_shape"] == list(obj.shape) and out["default_dtype"] == "complex64"
    assert out["valid"] == [True, True, True]
    assert out["support"] == int(support.sum())
    assert out["abs_sum"] == pytest.approx(float(np.abs(obj).sum()), rel=1e-5)
    assert out["llk_free"] == 1.5


@pytest.mark.pynx
@pytest.mark.skipif(not _system_has("pynx.cdi"), reason="Debian's python3-pynx is not installed in /usr/bin/python3")
def test_readable_by_pynx_loader(tmp_path, result):
    """PyNX's own result loader (the one pynx-cdi-analysis uses to build modes) reads object, support and free LLK."""
    path = _write(tmp_path / "r.cxi", result, derived=_derived(result))  # extra images must not confuse it
    code = """
import json, sys
import numpy as np
from pynx.cdi.scripts.pynx_cdi_analysis import load_cxi
r = load_cxi(sys.argv[1], {"modes_type": "complex", "modes_crop": "no"})
o = r["obj"]
print(json.dumps({"dtype": str(o.dtype), "shape": list(o.shape), "llk": r["llk"],
                  "abs_sum": float(np.abs(o).sum()), "is_data": "iobs" in r}))
"""
    r = subprocess.run([SYSTEM_PYTHON, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                       env={"PYNX_PU": "cpu", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"dtype": "complex64", "shape": list(result[0].shape), "llk": 1.5,
                   "abs_sum": pytest.approx(float(np.abs(result[0]).sum()), rel=1e-5), "is_data": False}


def test_previews(tmp_path, result):
    obj, support, iobs, mask = result
    images = render_previews(iobs=iobs, obj=obj, support=support, mask=mask, title="t")
    assert sorted(images) == ["intensity", "object"]
    for rgb in images.values():
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert rgb.shape[0] > 200 and rgb.shape[1] > 600
        packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
        assert len(np.unique(packed)) > 50  # real pictures, not a blank canvas
    # the reciprocal phase of the object is the phase of its diffraction
    f = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj), norm="ortho"))
    strong = np.abs(f) > np.abs(f).max() * 1e-3
    d = np.angle(np.exp(1j * (reciprocal_phase(obj) - np.angle(f))))
    assert np.abs(d[strong]).max() < 1e-4
    # PNG round trip is lossless and atomic (only the final file is left)
    path = save_png(images["object"], tmp_path / "o.png")
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]
    from matplotlib import image as mpimg

    back = mpimg.imread(path)
    np.testing.assert_array_equal((back[..., :3] * 255).round().astype(np.uint8), images["object"])
