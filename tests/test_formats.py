"""Input readers: every supported format gives the same float32 array; every bad input is one clear InputError."""
import h5py
import numpy as np
import pytest
import tifffile

from physics.errors import InputError
from workers.io.formats import atomic_path, check_output_path, read_intensity, read_mask, split_spec


@pytest.fixture
def cube():
    rng = np.random.default_rng(0)
    return rng.poisson(50.0, size=(16, 20, 24)).astype(np.float32)


def test_split_spec(tmp_path):
    assert split_spec("a/b.npz:intensity") == (tmp_path.__class__("a/b.npz"), "intensity")
    assert split_spec("x.h5:/entry/data") == (tmp_path.__class__("x.h5"), "/entry/data")
    assert split_spec("plain.npy") == (tmp_path.__class__("plain.npy"), None)
    # an existing file whose name contains ':' is taken as is
    odd = tmp_path / "a:b.npy"
    np.save(odd, np.zeros(3))
    assert split_spec(str(odd)) == (odd, None)


def test_all_formats_read_the_same(tmp_path, cube):
    np.save(tmp_path / "a.npy", cube.astype(np.uint32))
    np.savez(tmp_path / "one.npz", whatever=cube)
    np.savez(tmp_path / "many.npz", intensity=cube, mask=np.zeros(cube.shape, bool), other=cube * 2)
    tifffile.imwrite(tmp_path / "a.tif", cube)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["scan/detector/data"] = cube
        f["scan/positions"] = np.arange(10.0)
    with h5py.File(tmp_path / "pynx.cxi", "w") as f:  # PyNX data file layout
        f["entry_1/instrument_1/detector_1/data"] = cube
        f["entry_1/data_1/data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
    specs = ["a.npy", "one.npz", "many.npz", "many.npz:intensity", "a.tif", "a.h5", "a.h5:/scan/detector/data",
             "a.h5:scan/detector/data", "pynx.cxi"]
    for spec in specs:
        arr = read_intensity(f"{tmp_path}/{spec}")
        assert arr.dtype == np.float32 and arr.shape == cube.shape, spec
        np.testing.assert_array_equal(arr, cube, err_msg=spec)
    np.testing.assert_array_equal(read_intensity(f"{tmp_path}/many.npz:other"), cube * 2)


def _err(spec, **kw):
    with pytest.raises(InputError) as e:
        read_intensity(spec, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("name,array,needle", [
    ("flat.npy", np.ones((32, 32), np.float32), "2D"),
    ("small.npy", np.ones((32, 32, 8), np.float32), "too small"),
    ("nan.npy", np.where(np.arange(16 ** 3).reshape(16, 16, 16) == 5, np.nan, 1.0), "NaN"),
    ("neg.npy", np.where(np.arange(16 ** 3).reshape(16, 16, 16) < 3, -1.0, 1.0), "3 negative"),
    ("zeros.npy", np.zeros((16, 16, 16)), "all zeros"),
    ("cplx.npy", np.ones((16, 16, 16), np.complex64), "complex"),
    ("text.npy", np.full((16, 16, 16), "a"), "non-numeric"),
])
def test_bad_arrays(tmp_path, name, array, needle):
    np.save(tmp_path / name, array)
    msg = _err(tmp_path / name)
    assert needle in msg and name in msg


def test_bad_files_and_keys(tmp_path, cube):
    assert "not found" in _err(tmp_path / "missing.npy")
    assert "unknown file type" in _err(_write(tmp_path / "a.txt", b"hello"))
    assert "not a readable .npy" in _err(_write(tmp_path / "bad.npy", b"garbage"))
    assert "not a readable HDF5" in _err(_write(tmp_path / "bad.h5", b"garbage"))
    assert "not a readable TIFF" in _err(_write(tmp_path / "bad.tif", b"garbage"))
    np.savez(tmp_path / "two.npz", a=cube, b=cube)
    msg = _err(f"{tmp_path}/two.npz")
    assert "several arrays" in msg and "a, b" in msg
    assert "no array 'c'" in _err(f"{tmp_path}/two.npz:c")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["g/x"] = cube
        f["g/y"] = cube
    assert "no dataset '/nope'" in _err(f"{tmp_path}/a.h5:/nope")
    assert "is a group" in _err(f"{tmp_path}/a.h5:/g")
    assert "several 3D datasets" in _err(f"{tmp_path}/a.h5")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["v"] = np.arange(3)
    assert "no 3D intensity dataset" in _err(f"{tmp_path}/empty.h5")
    np.save(tmp_path / "a.npy", cube)
    assert "single array" in _err(f"{tmp_path}/a.npy:key")


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_pynx_result_is_not_mistaken_for_an_intensity(tmp_path, cube):
    """A CXI result without intensity holds a complex object and a support: neither is taken as the data."""
    with h5py.File(tmp_path / "r.cxi", "w") as f:
        f["entry_1/image_1/data"] = cube.astype(np.complex64)
        f["entry_1/image_1/mask"] = (cube > 50).astype(np.uint8)
        f["entry_1/data_1/data"] = h5py.SoftLink("/entry_1/image_1/data")
    assert "no 3D intensity dataset" in _err(tmp_path / "r.cxi")
    assert "complex" in _err(f"{tmp_path}/r.cxi:/entry_1/image_1/data")


def test_min_size_option(tmp_path):
    np.save(tmp_path / "s.npy", np.ones((8, 8, 8)))
    assert read_intensity(tmp_path / "s.npy", min_size=8).shape == (8, 8, 8)


def test_read_mask(tmp_path, cube):
    m = np.zeros(cube.shape, np.uint8)
    m[:, 3:5, :] = 7
    np.save(tmp_path / "m.npy", m)
    mask = read_mask(tmp_path / "m.npy", cube.shape)
    assert mask.dtype == bool and mask.sum() == cube.shape[0] * 2 * cube.shape[2]
    with h5py.File(tmp_path / "pynx.cxi", "w") as f:
        f["entry_1/instrument_1/detector_1/data"] = cube
        f["entry_1/instrument_1/detector_1/mask"] = m
    np.testing.assert_array_equal(read_mask(tmp_path / "pynx.cxi", cube.shape), mask)
    with pytest.raises(InputError, match="does not match the intensity shape"):
        read_mask(tmp_path / "m.npy", (16, 16, 16))
    np.save(tmp_path / "all.npy", np.ones(cube.shape))
    with pytest.raises(InputError, match="masks every voxel"):
        read_mask(tmp_path / "all.npy", cube.shape)
    with h5py.File(tmp_path / "only_data.h5", "w") as f:
        f["data"] = cube
    with pytest.raises(InputError, match="no mask at"):  # a mask is never guessed
        read_mask(tmp_path / "only_data.h5", cube.shape)
    with pytest.raises(InputError, match="mask file not found"):
        read_mask(tmp_path / "nope.npy", cube.shape)


def test_check_output_path(tmp_path):
    assert check_output_path(tmp_path / "r.cxi", suffixes=(".cxi",)) == tmp_path / "r.cxi"
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "no" / "r.cxi")
    with pytest.raises(InputError, match="must end with .cxi"):
        check_output_path(tmp_path / "r.txt", suffixes=(".cxi",))
    with pytest.raises(InputError, match="is a directory"):
        check_output_path(tmp_path)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.npy"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            np.save(tmp, np.zeros(3))
            assert tmp.exists()
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        np.save(tmp, np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]
    np.testing.assert_array_equal(np.load(target), np.arange(3))
