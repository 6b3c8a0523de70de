"""Load the authors' published Keras weights (e.g. model_paper.h5) into our PyTorch phase UNet.

Reads the HDF5 file with h5py only (no Keras or TensorFlow needed). Understands the legacy Keras layout
written by TF 2.x Keras (``model.save("x.h5")`` / ``save_weights("x.h5")``: ``[model_weights/]<layer>/<layer>/
kernel:0``) and by Keras 3 (the same without ":0", and ``save_weights("x.weights.h5")``:
``layers/<path>/vars/0``). Layers are matched by kind (Conv3D / Conv3DTranspose) in creation order, which the
auto-generated names (conv3d, conv3d_1, ...) give, and every shape is checked. Kernels are converted from
Keras (kd,kh,kw,in,out) [Conv3D] and (kd,kh,kw,out,in) [Conv3DTranspose] to torch (out,in,kd,kh,kw) and
(in,out,kd,kh,kw): both are the permutation (4,3,0,1,2); neither is flipped (both frameworks compute
cross-correlations and their transposes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from physics.errors import InputError
from models.unet import PhaseUNet, build_unet

CONV, TRANSPOSE = "Conv3D", "Conv3DTranspose"
_AUTO_NAME = re.compile(r"^(conv3d|conv3d_transpose)(?:_(\d+))?$")


@dataclass
class KerasLayer:
    """One weighted layer read from the file: name, kind, kernel and bias arrays, position in the file."""

    name: str
    kind: str
    kernel: np.ndarray
    bias: np.ndarray | None
    index: int


@dataclass
class ImportReport:
    """What was loaded: source layout, Keras version, and (keras name -> torch module name) pairs."""

    layout: str
    keras_version: str
    pairs: list[tuple[str, str]] = field(default_factory=list)


def _text(value) -> str:
    """HDF5 attribute (bytes or str) as str."""
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _class_names(f) -> dict[str, str]:
    """Layer name -> Keras class name from the model_config attribute, when the file has one."""
    raw = f.attrs.get("model_config")
    if raw is None:
        return {}
    try:
        cfg = json.loads(_text(raw))
        return {lay["config"]["name"]: lay["class_name"] for lay in cfg["config"]["layers"]}
    except (ValueError, KeyError, TypeError):
        return {}


def _kind(name: str, classes: dict[str, str]) -> str | None:
    """Conv3D / Conv3DTranspose for a weighted layer, from model_config or else from its name."""
    cls = classes.get(name)
    if cls is not None:
        return TRANSPOSE if cls == TRANSPOSE else CONV if cls == CONV else None
    return TRANSPOSE if "transpose" in name.lower() else CONV


def _read_legacy(group, classes) -> list[KerasLayer]:
    """Weighted layers of a legacy Keras h5 group carrying ``layer_names`` (Keras 2 and Keras 3 legacy)."""
    layers = []
    for index, raw in enumerate(group.attrs["layer_names"]):
        name = _text(raw)
        g = group[name]
        names = [_text(n) for n in g.attrs.get("weight_names", [])]
        if not names:
            continue
        arrays = {n.split("/")[-1].split(":")[0]: np.asarray(g[n]) for n in names}
        if "kernel" not in arrays:
            raise InputError(f"layer {name!r} has weights {sorted(arrays)} but no kernel: not the phase UNet")
        layers.append(KerasLayer(name, _kind(name, classes), arrays["kernel"], arrays.get("bias"), index))
    return layers


def _read_keras3(group, classes) -> list[KerasLayer]:
    """Weighted layers of a Keras 3 ``.weights.h5`` file (``layers/<path>/vars/0`` = kernel, ``1`` = bias)."""
    layers = []
    keys = sorted(group, key=_natural)
    for index, key in enumerate(keys):
        vars_ = group[key].get("vars")
        if vars_ is None or len(vars_) == 0:
            continue
        name = _text(vars_.attrs.get("name", key))
        kernel = np.asarray(vars_["0"])
        bias = np.asarray(vars_["1"]) if "1" in vars_ else None
        layers.append(KerasLayer(name, _kind(key, classes), kernel, bias, index))
    return layers


def _natural(name: str):
    """Sort key putting conv3d, conv3d_1, conv3d_2, ..., conv3d_10 in numeric order."""
    m = _AUTO_NAME.match(name)
    return (m.group(1), int(m.group(2) or 0)) if m else (name, -1)


def read_keras_h5(path: str | Path) -> tuple[list[KerasLayer], str, str]:
    """All weighted layers of a Keras HDF5 weight file: (layers in file order, layout name, keras version)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Keras weight file not found: {path}")
    if not h5py.is_hdf5(path):
        raise InputError(f"{path} is not an HDF5 file (TensorFlow checkpoints are not supported; "
                         "save the model with model.save('x.h5') or model.save_weights('x.h5'))")
    with h5py.File(path, "r") as f:
        classes = _class_names(f)
        version = _text(f.attrs.get("keras_version", ""))
        if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
            g = f["model_weights"]
            version = version or _text(g.attrs.get("keras_version", ""))
            return _read_legacy(g, classes), "legacy model (model.save .h5)", version
        if "layer_names" in f.attrs:
            return _read_legacy(f, classes), "legacy weights (save_weights .h5)", version
        if "layers" in f and isinstance(f["layers"], h5py.Group):
            return _read_keras3(f["layers"], classes), "keras3 weights (.weights.h5)", version
    raise InputError(f"{path} is HDF5 but not a Keras weight file (no layer_names, model_weights or layers)")


def _creation_order(layers: list[KerasLayer]) -> list[KerasLayer]:
    """Layers sorted by creation order when all names are Keras auto-names, else kept in file order."""
    if all(_AUTO_NAME.match(lay.name) for lay in layers):
        return sorted(layers, key=lambda lay: _natural(lay.name))
    return sorted(layers, key=lambda lay: lay.index)


def _to_torch(kernel: np.ndarray) -> np.ndarray:
    """Keras (kd,kh,kw,a,b) kernel to torch (b,a,kd,kh,kw) for both Conv3D and Conv3DTranspose."""
    return np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2))


def load_keras_weights(model: PhaseUNet, path: str | Path) -> ImportReport:
    """Copy the weights of a Keras phase-UNet HDF5 file into ``model`` (same width); checks every shape."""
    layers, layout, version = read_keras_h5(path)
    targets = model.keras_layers()
    plan = []
    for kind, cls in ((CONV, nn.Conv3d), (TRANSPOSE, nn.ConvTranspose3d)):
        ours = [(n, m) for n, m in targets if type(m) is cls]
        theirs = _creation_order([lay for lay in layers if lay.kind == kind])
        if len(theirs) != len(ours):
            raise InputError(f"{path}: {len(theirs)} {kind} layers in the file, the width-{model.config['width']} "
                             f"phase UNet has {len(ours)}")
        for lay, (tname, module) in zip(theirs, ours):
            if lay.kernel.ndim != 5:
                raise InputError(f"layer {lay.name!r}: kernel shape {lay.kernel.shape} is not a 3D convolution kernel")
            weight = _to_torch(lay.kernel)
            if weight.shape != tuple(module.weight.shape):
                expect = tuple(module.weight.permute(2, 3, 4, 1, 0).shape)
                raise InputError(f"layer {lay.name!r}: kernel shape {lay.kernel.shape} does not match {expect} "
                                 f"expected for {tname} (model width {model.config['width']})")
            bias_shape = None if lay.bias is None else lay.bias.shape
            if bias_shape != tuple(module.bias.shape):
                raise InputError(f"layer {lay.name!r}: bias shape {bias_shape} does not match "
                                 f"{tuple(module.bias.shape)} expected for {tname}")
            plan.append((lay.name, tname, module, weight, lay.bias))
    extra = [lay.name for lay in layers if lay.kind is None]
    if extra:
        raise InputError(f"{path}: weighted layers that are not 3D convolutions: {extra[:5]}")
    report = ImportReport(layout, version)
    with torch.no_grad():
        for kname, tname, module, weight, bias in plan:
            module.weight.copy_(torch.from_numpy(weight))
            module.bias.copy_(torch.from_numpy(np.asarray(bias)))
            report.pairs.append((kname, tname))
    return report


def import_keras_model(path: str | Path, width: float = 1.0, **options) -> PhaseUNet:
    """Build the phase UNet at ``width`` (1.0 = the paper model) and load the Keras weights from ``path``."""
    model = build_unet(width, **options)
    load_keras_weights(model, path)
    return model
