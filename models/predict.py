"""Inference: load a trained phase UNet once and predict the reciprocal phase of 64³ patterns."""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.loss import normalise_intensity
from models.unet import INPUT_SIZE, build_unet
from physics.errors import InputError

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "unet_w0125.pt"


@dataclass
class LoadedModel:
    """A model ready for inference, with what a result must record about it."""

    net: torch.nn.Module
    device: torch.device
    name: str
    sha256: str
    arch_config: dict
    meta: dict

    def predict_phase(self, intensity: np.ndarray) -> np.ndarray:
        """Reciprocal phase (float32, 64³) predicted from a centred 64³ intensity (masked voxels set to 0)."""
        return predict_phase(self, intensity)


def file_sha256(path: str | Path) -> str:
    """Checksum recorded with every result, so a reconstruction names the exact weights it used."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(path: str | Path | None = None, device: str | torch.device = "auto",
               keras_width: float = 1.0) -> LoadedModel:
    """Load weights written by `models.train.export_weights` (default: the shipped model), or the authors'
    Keras .h5 weights (the paper's w=1 model, e.g. model_paper.h5), converted by models.keras_import."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise InputError(f"model weights not found: {path}")
    from physics.phasing.cdi import resolve_device

    device = resolve_device(device)  # "auto": CUDA when present; InputError for unknown or absent devices
    if path.suffix.lower() in (".h5", ".hdf5", ".keras"):
        from models.keras_import import import_keras_model

        net = import_keras_model(path, width=keras_width).to(device).eval()
        if device.type == "cpu":
            net = net.to(memory_format=torch.channels_last_3d)
        return LoadedModel(net, device, path.stem, file_sha256(path), net.config, {"source": "keras"})
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        arch = dict(payload["arch_config"])
        arch.pop("arch", None)
        net = build_unet(arch.pop("width"), **arch)
        net.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError, EOFError, pickle.UnpicklingError,
            ModuleNotFoundError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise InputError(f"{path} is not a phase UNet weights file ({first}); give a .pt written by "
                         f"`bcdi-recon train` or leave --model out for the shipped model") from None
    net = net.to(device).eval()
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last_3d)
    return LoadedModel(net, device, path.stem, file_sha256(path), payload["arch_config"], payload.get("meta", {}))


@torch.inference_mode()
def predict_phase(model: LoadedModel, intensity: np.ndarray) -> np.ndarray:
    """Run the CNN on one centred 64³ intensity; returns the predicted reciprocal phase (float32, 64³)."""
    intensity = np.asarray(intensity, dtype=np.float32)
    if intensity.shape != (INPUT_SIZE,) * 3:
        raise InputError(f"the CNN takes a {INPUT_SIZE}³ intensity, got shape {intensity.shape}")
    x = torch.from_numpy(normalise_intensity(intensity))[None, None].to(model.device)
    if model.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    return model.net(x)[0, 0].float().cpu().numpy()
