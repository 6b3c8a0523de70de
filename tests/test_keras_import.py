"""Proof of the Keras weight importer: a Keras 3 build of the same UNet, saved in every HDF5 layout we accept
(Keras 3 .weights.h5, Keras 3 legacy .h5, and a TF 2.10-style Keras 2 .h5), loads into our torch model and gives
the same output. The real model_paper.h5 (575 MB, Git LFS) cannot be downloaded here."""

import os
import re

os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py
import numpy as np
import pytest
import torch

keras = pytest.importorskip("keras", reason="keras extra not installed")

from models.keras_import import import_keras_model, load_keras_weights, read_keras_h5  # noqa: E402
from models.keras_reference import build_keras_unet  # noqa: E402
from models.unet import PAPER_PARAMETERS, build_unet, count_parameters  # noqa: E402
from physics.errors import InputError  # noqa: E402

WIDTH = 0.0625
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras-on-torch numpy 2 noise


@pytest.fixture(scope="module")
def keras_model():
    """Small-width Keras reference UNet with random kernels and random (non-zero) biases."""
    keras.utils.set_random_seed(3)
    model = build_keras_unet(WIDTH)
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.05, bias.shape).astype(np.float32)])
    return model


@pytest.fixture(scope="module")
def sample_and_reference(keras_model):
    """A random input (NCDHW) and the Keras model's output for it, in NCDHW."""
    x = np.random.default_rng(4).random((1, 1, 64, 64, 64), dtype=np.float32)
    y = keras.ops.convert_to_numpy(keras_model(x.transpose(0, 2, 3, 4, 1), training=False))
    return x, y.transpose(0, 4, 1, 2, 3)


def _keras2_layout(src: str, dst: str) -> None:
    """Rewrite a Keras 3 legacy .h5 the way TF 2.10 Keras writes it: auto-names counted from 0 in creation
    order (conv3d, conv3d_1, ...), weight datasets named kernel:0 / bias:0, byte-string attributes."""
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        g = fin["model_weights"]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs["layer_names"]]
        weighted = [n for n in names if len(g[n].attrs["weight_names"])]
        rename = {}
        for prefix in ("conv3d_transpose", "conv3d"):
            mine = sorted((n for n in weighted if re.fullmatch(prefix + r"(_\d+)?", n) and n not in rename),
                          key=lambda n: int(n[len(prefix):].lstrip("_") or 0))
            for i, n in enumerate(mine):
                rename[n] = prefix if i == 0 else f"{prefix}_{i}"
        out = fout.create_group("model_weights")
        out.attrs["layer_names"] = np.array([rename.get(n, n).encode() for n in names])
        out.attrs["backend"] = b"tensorflow"
        out.attrs["keras_version"] = b"2.10.0"
        fout.attrs["keras_version"] = b"2.10.0"
        for n in names:
            new = rename.get(n, n)
            grp = out.create_group(new)
            wnames = []
            for w in g[n].attrs["weight_names"]:
                short = (w.decode() if isinstance(w, bytes) else str(w)).split("/")[-1]
                wnames.append(f"{new}/{short}:0".encode())
                grp.create_dataset(f"{new}/{short}:0", data=g[n][w][()])
            grp.attrs["weight_names"] = np.array(wnames) if wnames else np.array([], dtype="S1")


@pytest.mark.parametrize("layout", ["keras3_weights", "keras3_legacy_model", "keras2_tf210_model"])
def test_imported_weights_reproduce_keras_output(keras_model, sample_and_reference, tmp_path, layout):
    x, y_keras = sample_and_reference
    path = tmp_path / "model.weights.h5"
    if layout == "keras3_weights":
        keras_model.save_weights(path)
    else:
        path = tmp_path / "model.h5"
        keras_model.save(path)
        if layout == "keras2_tf210_model":
            path2 = tmp_path / "model_tf210.h5"
            _keras2_layout(str(path), str(path2))
            path = path2
    model = build_unet(WIDTH)
    report = load_keras_weights(model, path)
    assert len(report.pairs) == 27  # 21 Conv3D + 6 Conv3DTranspose
    model.eval().to(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        y = model(torch.from_numpy(x).to(memory_format=torch.channels_last_3d)).numpy()
    assert np.abs(y_keras).max() > 1e-2  # a real, non-trivial output to compare
    assert np.abs(y - y_keras).max() < 1e-4
    if layout == "keras2_tf210_model":
        assert report.keras_version == "2.10.0"
        assert ("conv3d", "dilated.0.branches.0") in report.pairs  # dilation 8 branch is the first conv
        assert ("conv3d_transpose", "decoder.0.conv") in report.pairs


def test_w1_parameter_counts_agree():
    k = build_keras_unet(1.0)
    assert k.count_params() == count_parameters(build_unet(1.0)) == PAPER_PARAMETERS
    assert build_keras_unet(0.25).count_params() == count_parameters(build_unet(0.25))


def test_mismatched_file_is_a_clear_error(keras_model, tmp_path):
    path = tmp_path / "small.weights.h5"
    keras_model.save_weights(path)
    with pytest.raises(InputError, match=r"layer 'conv3d.*kernel shape .* does not match .* dilated\.1\.branches\.0"):
        import_keras_model(path, width=0.125)  # the file holds w=0.0625 weights
    with pytest.raises(InputError, match="Conv3D layers in the file"):
        load_keras_weights(build_unet(WIDTH), _drop_first_conv(path, tmp_path / "cut.weights.h5"))
    bad = tmp_path / "notes.h5"
    bad.write_text("not hdf5")
    with pytest.raises(InputError, match="not an HDF5 file"):
        read_keras_h5(bad)
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(InputError, match="not a Keras weight file"):
        read_keras_h5(empty)
    with pytest.raises(InputError, match="not found"):
        read_keras_h5(tmp_path / "missing.h5")


def _drop_first_conv(src, dst):
    """Copy of a Keras 3 .weights.h5 with one Conv3D layer removed."""
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        fin.copy("layers", fout)
        del fout["layers/conv3d"]
    return dst
