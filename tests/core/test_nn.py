"""BinaryConnect layers: binarization, straight-through gradient, clipping, learning-rate scales,
loss."""

from __future__ import annotations

import math

import pytest
import torch

from bchw.core.nn import (
    BinaryConnectMLP,
    BinaryLinear,
    binarize_deterministic,
    binarize_stochastic,
    hard_sigmoid,
    square_hinge_loss,
)
from bchw.core.options import parse_arch
from bchw.errors import BchwError


def test_deterministic_binarization_is_sign_with_zero_to_plus_one():
    w = torch.tensor([-1.0, -0.3, -1e-9, -1e-45, -0.0, 0.0, 1e-45, 1e-9, 0.7, 1.0])
    assert binarize_deterministic(w).tolist() == [-1, -1, -1, -1, 1, 1, 1, 1, 1, 1]
    # The fast form is exactly the definition, where(w >= 0, +1, -1), on many values.
    w = torch.cat([torch.rand(100_000) * 2 - 1, torch.randn(1000) * 1e-38])
    assert torch.equal(binarize_deterministic(w), torch.where(w >= 0, 1.0, -1.0))


def test_stochastic_binarization_is_exactly_u_below_p():
    # +1 exactly where the uniform draw u lies below p = hard_sigmoid(w), ties (u == p) to -1.
    w = torch.cat([torch.rand(100_000) * 2.4 - 1.2, torch.tensor([-1.0, 0.0, 1.0])])
    samples = binarize_stochastic(w, torch.Generator().manual_seed(7))
    u = torch.rand(w.shape, generator=torch.Generator().manual_seed(7))
    assert torch.equal(samples, torch.where(u < hard_sigmoid(w), 1.0, -1.0))


def test_hard_sigmoid():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    assert hard_sigmoid(x).tolist() == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]


@pytest.mark.parametrize("w, p", [(-1.0, 0.0), (-0.5, 0.25), (0.0, 0.5), (0.6, 0.8), (1.0, 1.0)])
def test_stochastic_binarization_follows_hard_sigmoid(w, p):
    gen = torch.Generator().manual_seed(1234)
    samples = binarize_stochastic(torch.full((200_000,), w), gen)
    assert set(samples.unique().tolist()) <= {-1.0, 1.0}
    frac_plus = float((samples > 0).double().mean())
    # Binomial standard deviation is at most 0.0012 here; 5 sigma.
    assert abs(frac_plus - p) < 0.006


def test_forward_uses_binary_weights_and_gradient_passes_straight_through():
    layer = BinaryLinear(3, 2, "deterministic")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.2, -0.7, 0.0], [-0.1, 0.9, -0.4]]))
        layer.bias.zero_()
    layer.train()
    x = torch.tensor([[1.0, 2.0, 3.0]])
    y = layer(x)
    assert y.tolist() == [[1 - 2 + 3, -1 + 2 - 3]]
    y.sum().backward()
    # d(sum y)/dW_b = x for each row; straight-through gives exactly that to the real weights.
    assert layer.weight.grad.tolist() == [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]


def test_stochastic_layer_evaluates_with_real_or_binary_weights():
    layer = BinaryLinear(2, 1, "stochastic")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.25, -0.5]]))
        layer.bias.zero_()
    layer.eval()
    x = torch.tensor([[1.0, 1.0]])
    assert layer(x).item() == 0.0  # binary: +1 - 1
    layer.test_weights = "real"
    assert layer(x).item() == -0.25


def test_initialisation_is_uniform_in_minus_one_one():
    torch.manual_seed(0)
    w = BinaryLinear(500, 400, "deterministic").weight.detach()
    assert w.min() >= -1 and w.max() <= 1
    assert w.min() < -0.99 and w.max() > 0.99
    assert abs(float(w.mean())) < 0.01


def test_clip_after_step_keeps_real_weights_in_range():
    torch.manual_seed(0)
    model = BinaryConnectMLP([4, 3, 2])
    opt = torch.optim.SGD(model.parameters(), lr=100.0)
    # Batch norm cancels a plain sum over the batch; weight the outputs at random instead.
    (model(torch.randn(8, 4)) * torch.randn(8, 2)).sum().backward()
    opt.step()
    assert max(float(lin.weight.detach().abs().max()) for lin in model.linears) > 1
    model.clip_()
    for lin in model.linears:
        assert float(lin.weight.detach().abs().max()) <= 1.0
    # Biases and batch-norm parameters are not clipped.
    assert any(float(p.detach().abs().max()) > 1 for p in model.norms.parameters())


def test_glorot_learning_rate_scales_match_the_paper():
    model = BinaryConnectMLP([784, 2048, 2048, 2048, 10])
    scales = [lin.lr_scale for lin in model.linears]
    assert [round(s, 2) for s in scales] == [43.45, 52.26, 52.26, 37.04]


def test_param_groups_scale_only_binary_weights():
    model = BinaryConnectMLP([6, 5, 3])
    groups = model.param_groups(lr=0.01)
    for lin, group in zip(model.linears, groups, strict=False):
        assert group["params"] == [lin.weight]
        assert group["lr"] == pytest.approx(
            0.01 / math.sqrt(1.5 / (lin.in_features + lin.out_features))
        )
    rest = groups[-1]
    assert rest["lr"] == 0.01
    ids = {id(p) for p in rest["params"]}
    expected = [lin.bias for lin in model.linears] + list(model.norms.parameters())
    assert ids == {id(p) for p in expected}


def test_float_baseline_layer_has_no_scale_and_no_clipping():
    layer = BinaryLinear(3, 2, "none")
    assert layer.lr_scale == 1.0
    with torch.no_grad():
        layer.weight.fill_(5.0)
    layer.clip_()
    assert float(layer.weight.detach().max()) == 5.0


def test_square_hinge_loss():
    out = torch.tensor([[0.5, -2.0, 1.5], [2.0, 0.0, -1.0]])
    labels = torch.tensor([0, 1])
    # targets [[1,-1,-1],[-1,1,-1]]: margins 1-t*y -> [[0.5,-1,2.5],[3,1,0]] -> clipped squares
    expected = (0.25 + 0 + 6.25 + 9 + 1 + 0) / 6
    assert square_hinge_loss(out, labels).item() == pytest.approx(expected)


def test_output_layer_is_batch_normalised_and_hidden_layers_use_relu():
    model = BinaryConnectMLP([4, 3, 2]).eval()
    assert len(model.norms) == 2
    with torch.no_grad():
        model.norms[0].bias.fill_(-10.0)  # hidden pre-activations all negative -> ReLU zeros
        model.norms[1].bias.copy_(torch.tensor([0.3, -0.2]))
    out = model(torch.randn(5, 4))
    assert torch.allclose(out, torch.tensor([0.3, -0.2]).expand(5, 2))


@pytest.mark.parametrize("arch", ["", "784", "a-b", "784-0-10", "10--3", "784-100000-10"])
def test_bad_architectures_are_refused(arch):
    with pytest.raises(BchwError):
        parse_arch(arch)


def test_parse_arch():
    assert parse_arch("784-1024-1024-1024-10") == [784, 1024, 1024, 1024, 10]


def test_binary_convolution_binarizes_clips_and_scales_like_the_dense_layer():
    from bchw.core.nn import BinaryConv2d

    torch.manual_seed(0)
    conv = BinaryConv2d(3, 5, 3, 1, "deterministic")
    assert conv.weight.abs().max() <= 1
    # Glorot with the kernel counted: fan_in = 3 * 9, fan_out = 5 * 9 (the paper's code).
    assert conv.lr_scale == pytest.approx(1 / math.sqrt(1.5 / (27 + 45)))
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    out = conv(x)
    expected = torch.nn.functional.conv2d(
        x, torch.where(conv.weight >= 0, 1.0, -1.0), conv.bias, padding=1
    )
    assert torch.equal(out, expected)
    out.sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0  # straight through
    with torch.no_grad():
        conv.weight.mul_(3)
    conv.clip_()
    assert conv.weight.abs().max() == 1
    rows = conv.binary_rows()  # [out, ky, kx, c] flattened: the integer model's window order
    assert rows.shape == (5, 27)
    assert torch.equal(
        rows.reshape(5, 3, 3, 3).permute(0, 3, 1, 2), torch.where(conv.weight >= 0, 1.0, -1.0)
    )


def test_a_cnn_takes_images_flattened_with_channels_innermost():
    from bchw.core.nn import BinaryConnectNet

    torch.manual_seed(1)
    net = BinaryConnectNet("2x4x5-3C3-MP2-4").eval()
    images = torch.rand(6, 2, 4, 5)  # N, C, H, W
    flat = images.permute(0, 2, 3, 1).reshape(6, -1)  # H x W x C order
    conv, norm = net.linears[0], net.norms[0]
    x = torch.nn.functional.max_pool2d(torch.relu(norm(conv(images))), 2)
    dense_in = x.permute(0, 2, 3, 1).reshape(6, -1)
    expected = net.norms[1](net.linears[1](dense_in))
    assert torch.allclose(net(flat), expected)
    stages = net.stage_outputs(flat)
    assert [tuple(s.shape) for s in stages] == [(6, 4 * 5 * 3), (6, 4)]
    assert torch.allclose(stages[-1], expected)
    assert net.linears[1].in_features == 2 * 2 * 3
