"""Inference entry points: our weights files and the authors' Keras .h5 files both load and predict."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest
import torch

from models.loss import normalise_intensity
from models.predict import load_model
from models.train import TrainConfig, export_weights, train
from physics.errors import InputError
from physics.simulate import simulate_sample


def test_exported_weights_load_and_predict_the_same_as_the_trained_net(tmp_path):
    train(TrainConfig(out=str(tmp_path / "run"), width=0.0625, steps=1, batch=1, val_every=1, n_val=1, workers=0),
          progress=False)
    export_weights(tmp_path / "run" / "checkpoint.pt", tmp_path / "w.pt")
    m = load_model(tmp_path / "w.pt")
    s = simulate_sample(1)
    phase = m.predict_phase(s["intensity"])
    assert phase.shape == (64, 64, 64) and phase.dtype == np.float32 and np.isfinite(phase).all()
    assert len(m.sha256) == 64 and m.arch_config["width"] == 0.0625
    with pytest.raises(InputError, match="64³"):
        m.predict_phase(s["intensity"][:32])


def test_keras_h5_weights_are_accepted_by_load_model(tmp_path):
    keras = pytest.importorskip("keras", reason="keras extra not installed")
    from models.keras_reference import build_keras_unet

    keras.utils.set_random_seed(5)
    km = build_keras_unet(0.0625)
    km.save(tmp_path / "paper_like.h5")
    m = load_model(tmp_path / "paper_like.h5", keras_width=0.0625)
    s = simulate_sample(2)
    x = normalise_intensity(s["intensity"])[None, ..., None]
    ref = keras.ops.convert_to_numpy(km(x, training=False))[0, ..., 0]
    assert np.abs(m.predict_phase(s["intensity"]) - ref).max() < 1e-4


def test_missing_or_foreign_weights_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "nope.pt")
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="not a phase UNet weights file"):
        load_model(tmp_path / "foreign.pt")
