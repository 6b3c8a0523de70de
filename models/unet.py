"""3D UNet that predicts the reciprocal-space phase of a 64³ BCDI pattern (after Masto et al. 2025).

The architecture follows the paper's reference description: two "dilated" encoder blocks (four parallel
dilated 5³ convolutions concatenated with the block input), plain conv blocks down to 1³, skip convolutions
halving the channels, a 2048-channel bottleneck and six stride-2 transposed convolutions back to 64³.
Every filter count is scaled by a width multiplier ``w`` (rounded half up, at least 1); ``w=1`` is the paper
model (143,759,937 parameters). Layout is NCDHW; the model also runs in ``torch.channels_last_3d``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from physics.errors import InputError

ARCH = "masto2025-unet3d"
PAPER_PARAMETERS = 143_759_937
INPUT_SIZE = 64
NEGATIVE_SLOPE = 0.2

# (filters, kernel, dilations) of the two dilated encoder blocks, then the plain encoder blocks.
DILATED_BLOCKS = ((32, 5, (8, 5, 3, 1)), (64, 5, (6, 4, 2, 1)))
ENCODER_BLOCKS = ((128, 4), (256, 3), (512, 3), (1024, 3))
BOTTLENECK = (2048, 2)
DECODER_BLOCKS = ((1024, 3), (512, 3), (256, 3), (128, 4), (64, 5), (32, 5))
FINAL_FILTERS = 16
SKIP_KERNEL = 3

# Architecture options; the defaults are the paper's model. The others are the ablation's candidates for a small
# CPU budget (bench/arch_ablation.py): full_res_kernel = kernel of the first dilated block (64³), min_branch /
# min_final = floors on the filters of the 64³ layers (at w = 0.125 they are 1 and 2), coords = three coordinate
# channels (q_z, q_y, q_x in [-1, 1]) beside the intensity, output "cossin" = predict (cos, sin) and return atan2.
DEFAULT_OPTIONS = {"final_kernel": 5, "full_res_kernel": 5, "min_branch": 1, "min_final": 1, "coords": False,
                   "output": "phase"}


def scaled(filters: int, width: float) -> int:
    """Filter count ``filters`` scaled by ``width``, rounded half up, at least 1."""
    return max(1, int(math.floor(filters * width + 0.5)))


def _check_options(width: float, options: dict) -> dict:
    """Validated architecture options (width and known keyword options), as a plain dict."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise InputError(f"UNet width must be a positive number, got {width!r}")
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise InputError(f"unknown UNet option(s) {unknown}; known: {sorted(DEFAULT_OPTIONS)}")
    opts = {**DEFAULT_OPTIONS, **options}
    for key in ("final_kernel", "full_res_kernel"):
        k = opts[key]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise InputError(f"{key} must be a positive odd integer, got {k!r}")
    for key in ("min_branch", "min_final"):
        if isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < 1:
            raise InputError(f"{key} must be a positive integer, got {opts[key]!r}")
    if opts["output"] not in ("phase", "cossin"):
        raise InputError(f"output must be 'phase' or 'cossin', got {opts['output']!r}")
    opts["coords"] = bool(opts["coords"])
    # only non-default options are stored, so configs (and checkpoints) of the paper's layout stay as they were
    return {"width": float(width), "final_kernel": opts["final_kernel"],
            **{k: v for k, v in opts.items() if k != "final_kernel" and v != DEFAULT_OPTIONS[k]}}


class ConvAct(nn.Module):
    """Stride-1 'same' 3D convolution followed by LeakyReLU(0.2) (Keras Conv3D padding='same' semantics)."""

    def __init__(self, cin: int, cout: int, kernel: int, act: bool = True):
        super().__init__()
        if kernel % 2:
            self.conv = nn.Conv3d(cin, cout, kernel, padding=kernel // 2)
            self.pad = None
        else:  # even kernel: Keras/TF pads floor((k-1)/2) before and the rest after
            self.conv = nn.Conv3d(cin, cout, kernel)
            before, after = (kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2
            self.pad = (before, after) * 3
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        x = self.conv(x)
        return F.leaky_relu(x, NEGATIVE_SLOPE) if self.act else x


class DilatedBlock(nn.Module):
    """Four parallel dilated convolutions concatenated after the block input, then LeakyReLU."""

    def __init__(self, cin: int, branch: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv3d(cin, branch, kernel, padding="same", dilation=d) for d in dilations)
        self.out_channels = cin + branch * len(dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x] + [conv(x) for conv in self.branches], dim=1)
        return F.leaky_relu(x, NEGATIVE_SLOPE)


class UpBlock(nn.Module):
    """Stride-2 transposed convolution with TensorFlow/Keras 'same' semantics (output = 2 × input), LeakyReLU.

    TF crops the full transposed output (length 2n-2+k) by floor((k-2)/2) before and the rest after; torch's
    ``padding`` crops symmetrically, so the full output is computed and sliced to match TF exactly.
    """

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.conv = nn.ConvTranspose3d(cin, cout, kernel, stride=2)
        total = max(kernel - 2, 0)
        self.crop = total // 2
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, h, w = x.shape[-3:]
        c = self.crop
        x = self.conv(x)[..., c:c + 2 * d, c:c + 2 * h, c:c + 2 * w]
        return F.leaky_relu(x, NEGATIVE_SLOPE)


class PhaseUNet(nn.Module):
    """UNet mapping a normalised log intensity (B,1,64,64,64) to the reciprocal-space phase (B,1,64,64,64)."""

    def __init__(self, width: float = 1.0, **options: Any):
        super().__init__()
        cfg = _check_options(width, options)
        self._config = {"arch": ARCH, **cfg}
        opt = {**DEFAULT_OPTIONS, **cfg}
        w = cfg["width"]
        self.coords = opt["coords"]
        self.cossin = opt["output"] == "cossin"

        cin = 4 if self.coords else 1
        self.dilated = nn.ModuleList()
        for i, (filters, kernel, dilations) in enumerate(DILATED_BLOCKS):
            kernel = opt["full_res_kernel"] if i == 0 else kernel
            block = DilatedBlock(cin, max(opt["min_branch"], scaled(filters, w) // 4), kernel, dilations)
            self.dilated.append(block)
            cin = block.out_channels
        skip_in = [b.out_channels for b in self.dilated]
        self.encoder = nn.ModuleList()
        for filters, kernel in ENCODER_BLOCKS:
            self.encoder.append(ConvAct(cin, scaled(filters, w), kernel))
            cin = scaled(filters, w)
            skip_in.append(cin)
        self.skips = nn.ModuleList(ConvAct(c, max(1, c // 2), SKIP_KERNEL) for c in skip_in)
        skip_out = [max(1, c // 2) for c in skip_in]
        self.bottleneck = ConvAct(cin, scaled(BOTTLENECK[0], w), BOTTLENECK[1])
        cin = scaled(BOTTLENECK[0], w)
        self.decoder = nn.ModuleList()
        for i, (filters, kernel) in enumerate(DECODER_BLOCKS):
            if i > 0:  # every decoder block but the first concatenates the skip of the matching depth
                cin += skip_out[len(skip_out) - i]
            self.decoder.append(UpBlock(cin, scaled(filters, w), kernel))
            cin = scaled(filters, w)
        cin += skip_out[0]
        k = cfg["final_kernel"]
        final = max(opt["min_final"], scaled(FINAL_FILTERS, w))
        self.final = ConvAct(cin, final, k)
        self.head = ConvAct(final, 2 if self.cossin else 1, k, act=False)

    @property
    def config(self) -> dict:
        """Plain dict that rebuilds this architecture with ``build_unet(**config)`` (stored in checkpoints)."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 1 or tuple(x.shape[2:]) != (INPUT_SIZE,) * 3:
            raise InputError(f"UNet input must have shape (B,1,{INPUT_SIZE},{INPUT_SIZE},{INPUT_SIZE}), "
                             f"got {tuple(x.shape)}")
        if self.coords:
            g = torch.linspace(-1, 1, INPUT_SIZE, device=x.device, dtype=x.dtype)
            zz, yy, xx = torch.meshgrid(g, g, g, indexing="ij")
            grid = torch.stack([zz, yy, xx])[None].expand(x.shape[0], -1, -1, -1, -1)
            x = torch.cat([x, grid], dim=1)
        skips = []
        for block in self.dilated:
            s = block(x)
            skips.append(s)
            x = F.max_pool3d(s, 2)
        for block in self.encoder:
            s = block(x)
            skips.append(s)
            x = F.max_pool3d(s, 2)
        skips = [conv(s) for conv, s in zip(self.skips, skips)]
        x = self.bottleneck(x)
        for i, up in enumerate(self.decoder):
            if i > 0:
                x = torch.cat([x, skips[len(skips) - i]], dim=1)
            x = up(x)
        x = torch.cat([x, skips[0]], dim=1)
        out = self.head(self.final(x))
        if self.cossin:  # the phase of the predicted unit vector: no 2π wrap for the network to learn
            out = torch.atan2(out[:, 1:2], out[:, 0:1])
        return out

    def keras_layers(self) -> list[tuple[str, nn.Module]]:
        """Weighted layers in the reference Keras model's creation order: (qualified name, Conv3d/ConvTranspose3d)."""
        layers = []
        for name, module in self.named_modules():
            if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
                layers.append((name, module))
        order = {"dilated": 0, "encoder": 1, "skips": 2, "bottleneck": 3, "decoder": 4, "final": 5, "head": 6}
        return sorted(layers, key=lambda item: order[item[0].split(".")[0]])  # stable: keeps index order


def build_unet(width: float = 1.0, **options: Any) -> PhaseUNet:
    """Build the phase UNet at width multiplier ``width``; ``build_unet(**model.config)`` rebuilds a model."""
    cfg = dict(options)
    arch = cfg.pop("arch", ARCH)
    if arch != ARCH:
        raise InputError(f"unknown model architecture {arch!r}, expected {ARCH!r}")
    return PhaseUNet(width, **cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
