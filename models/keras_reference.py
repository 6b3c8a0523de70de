"""Keras 3 (functional, NDHWC) build of the paper's phase UNet, only to prove the Keras weight importer.

Same layers, creation order and width rule as ``models.unet``. Layers are auto-named like the paper's
train.py (conv3d, conv3d_1, ..., conv3d_transpose, ...). Needs the ``keras`` extra and KERAS_BACKEND set to a
backend that is installed (the project uses ``torch``).

Transposed convolutions: TensorFlow's stride-2 'same' crops floor((k-2)/2) before; Keras 3 on the torch
backend crops differently for odd kernels (it warns about "inconsistencies across backends"). With
``tf_same=True`` (default) each one is built as a 'valid' transposed conv plus a Cropping3D, which gives the
TensorFlow result on any backend and holds the same weights as the paper's ``Conv3DTranspose(padding="same")``.
"""

from __future__ import annotations

import os

from models.unet import (BOTTLENECK, DECODER_BLOCKS, DILATED_BLOCKS, ENCODER_BLOCKS, FINAL_FILTERS, INPUT_SIZE,
                         NEGATIVE_SLOPE, SKIP_KERNEL, scaled)


def _keras():
    """Import keras, defaulting to the torch backend (TensorFlow is not a project dependency)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


def build_keras_unet(width: float = 1.0, final_kernel: int = 5, tf_same: bool = True):
    """Keras functional model of the phase UNet at width multiplier ``width`` (input (B,64,64,64,1))."""
    keras = _keras()
    L = keras.layers

    def act(x):
        return L.LeakyReLU(negative_slope=NEGATIVE_SLOPE)(x)

    def up(x, filters, kernel):
        if not tf_same:
            return act(L.Conv3DTranspose(filters, kernel, strides=2, padding="same")(x))
        x = L.Conv3DTranspose(filters, kernel, strides=2, padding="valid")(x)
        before = (kernel - 2) // 2  # full output is 2n - 2 + k long; TF keeps 2n starting at floor((k-2)/2)
        return act(L.Cropping3D(((before, kernel - 2 - before),) * 3)(x))

    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, INPUT_SIZE, 1))
    x = inputs
    skips = []
    for filters, kernel, dilations in DILATED_BLOCKS:
        branch = max(1, scaled(filters, width) // 4)
        branches = [L.Conv3D(branch, kernel, dilation_rate=d, padding="same")(x) for d in dilations]
        s = act(L.Concatenate()([x] + branches))
        skips.append(s)
        x = L.MaxPooling3D(2)(s)
    for filters, kernel in ENCODER_BLOCKS:
        s = act(L.Conv3D(scaled(filters, width), kernel, padding="same")(x))
        skips.append(s)
        x = L.MaxPooling3D(2)(s)
    skips = [act(L.Conv3D(max(1, s.shape[-1] // 2), SKIP_KERNEL, padding="same")(s)) for s in skips]
    x = act(L.Conv3D(scaled(BOTTLENECK[0], width), BOTTLENECK[1], padding="same")(x))
    for i, (filters, kernel) in enumerate(DECODER_BLOCKS):
        if i > 0:
            x = L.Concatenate()([x, skips[len(skips) - i]])
        x = up(x, scaled(filters, width), kernel)
    x = L.Concatenate()([x, skips[0]])
    x = act(L.Conv3D(scaled(FINAL_FILTERS, width), final_kernel, padding="same")(x))
    outputs = L.Conv3D(1, final_kernel, padding="same")(x)
    return keras.Model(inputs, outputs, name="PhaseUNet")
