"""Tests of the phase UNet: paper parameter counts, TF 'same' conventions, channels_last_3d, config round trip."""

import math

import numpy as np
import pytest
import torch

from models.unet import PAPER_PARAMETERS, ConvAct, UpBlock, build_unet, count_parameters, scaled
from physics.errors import InputError


@pytest.mark.parametrize("width, params", [(1.0, PAPER_PARAMETERS), (0.25, 8_990_817), (0.125, 2_249_645)])
def test_parameter_counts_match_the_reference(width, params):
    # w=1: the paper model rebuilt from train.py; 0.25 / 0.125: compute.md section 1 (same rounding)
    assert count_parameters(build_unet(width)) == params


def test_width_scaling_rules():
    assert [scaled(32, w) for w in (1, 0.25, 0.125, 0.01)] == [32, 8, 4, 1]
    m = build_unet(0.25)
    assert [b.out_channels for b in m.dilated] == [9, 25]  # input channel kept in the concat
    assert m.head.conv.out_channels == 1  # output stays one channel at every width
    assert m.skips[2].conv.out_channels == m.encoder[0].conv.out_channels // 2


def test_forward_shape_and_channels_last_agree():
    torch.manual_seed(0)
    m = build_unet(0.0625).eval()
    x = torch.rand(2, 1, 64, 64, 64)
    with torch.inference_mode():
        y = m(x)
        m_cl = build_unet(**m.config).to(memory_format=torch.channels_last_3d).eval()
        m_cl.load_state_dict(m.state_dict())
        y_cl = m_cl(x.to(memory_format=torch.channels_last_3d))
    assert y.shape == (2, 1, 64, 64, 64) and torch.isfinite(y).all()
    assert y.std() > 0  # no dead output
    assert (y_cl - y).abs().max().item() < 1e-5
    assert not torch.allclose(y[0], y[1])  # samples are processed independently


def test_gradients_reach_every_parameter_in_channels_last():
    torch.manual_seed(0)
    m = build_unet(0.0625).to(memory_format=torch.channels_last_3d)
    x = torch.rand(1, 1, 64, 64, 64).to(memory_format=torch.channels_last_3d)
    m(x).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_config_round_trip_and_options():
    m = build_unet(0.125, final_kernel=3)
    cfg = m.config
    assert cfg == {"arch": "masto2025-unet3d", "width": 0.125, "final_kernel": 3}
    m2 = build_unet(**cfg)
    m2.load_state_dict(m.state_dict())  # strict: same names and shapes
    assert count_parameters(m2) < count_parameters(build_unet(0.125))
    with pytest.raises(InputError, match="width"):
        build_unet(0)
    with pytest.raises(InputError, match="unknown UNet option"):
        build_unet(0.125, kernel=3)
    with pytest.raises(InputError, match="final_kernel"):
        build_unet(0.125, final_kernel=4)
    with pytest.raises(InputError, match="architecture"):
        build_unet(**{**cfg, "arch": "resnet"})
    with pytest.raises(InputError, match="shape"):
        m(torch.zeros(1, 1, 32, 32, 32))


def _tf_same_transpose(x, w, b, stride=2):
    """Reference stride-2 'same' transposed conv (TF: gradient of a SAME conv, pad_before = floor((k-2)/2))."""
    cin, cout, k = w.shape[0], w.shape[1], w.shape[2]
    n = x.shape[-1]
    before = max(k - 2, 0) // 2
    out = np.zeros((cout, 2 * n, 2 * n, 2 * n))
    for i in np.ndindex(n, n, n):
        for t in np.ndindex(k, k, k):
            j = [stride * a + c - before for a, c in zip(i, t)]
            if all(0 <= v < 2 * n for v in j):
                out[:, j[0], j[1], j[2]] += x[:, i[0], i[1], i[2]] @ w[:, :, t[0], t[1], t[2]]
    return out + b[:, None, None, None]


@pytest.mark.parametrize("k", [3, 4, 5])
def test_transposed_conv_follows_tf_same_padding(k):
    torch.manual_seed(k)
    up = UpBlock(3, 2, k)
    x = torch.randn(1, 3, 3, 3, 3)
    with torch.no_grad():
        got = up.conv(x)[..., up.crop:up.crop + 6, up.crop:up.crop + 6, up.crop:up.crop + 6][0].numpy()
        assert up(x).shape == (1, 2, 6, 6, 6)
    wt, bias = up.conv.weight.detach().double().numpy(), up.conv.bias.detach().double().numpy()
    ref = _tf_same_transpose(x[0].double().numpy(), wt, bias)
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("k", [2, 4])
def test_even_kernel_conv_pads_like_tf(k):
    # TF 'same': pad floor((k-1)/2) before, the rest after; an impulse shows where the kernel lands
    conv = ConvAct(1, 1, k, act=False)
    with torch.no_grad():
        conv.conv.weight.copy_(torch.arange(k ** 3, dtype=torch.float32).view(1, 1, k, k, k))
        conv.conv.bias.zero_()
        x = torch.zeros(1, 1, 6, 6, 6)
        x[0, 0, 3, 3, 3] = 1.0
        y = conv(x)[0, 0]
    before = (k - 1) // 2
    for t in np.ndindex(k, k, k):  # y[j] = sum_t x[j + t - before] w[t]  ->  y[3 - t + before] = w[t]
        j = tuple(3 - c + before for c in t)
        assert y[j].item() == conv.conv.weight[0, 0][t].item()
    assert y.shape == (6, 6, 6)


def test_ablation_options_build_run_and_keep_the_default_config():
    """The ablation's candidates build, keep the 64³ phase output, and leave the paper layout's config unchanged."""
    import torch

    from models.unet import build_unet, count_parameters

    base = build_unet(0.125)
    assert base.config == {"arch": "masto2025-unet3d", "width": 0.125, "final_kernel": 5}
    x = torch.rand(1, 1, 64, 64, 64)
    for opts in ({"final_kernel": 3, "full_res_kernel": 3}, {"min_branch": 4, "min_final": 8}, {"coords": True},
                 {"output": "cossin"}):
        m = build_unet(0.125, **opts)
        assert build_unet(**m.config).config == m.config
        with torch.no_grad():
            y = m(x)
        assert y.shape == (1, 1, 64, 64, 64)
        if opts.get("output") == "cossin":
            assert float(y.abs().max()) <= math.pi + 1e-6
    assert count_parameters(build_unet(0.125, min_branch=4, min_final=8)) > count_parameters(base)
    with pytest.raises(InputError, match="output"):
        build_unet(0.125, output="sin")
