"""A conv net: a FLOP and parameter budget, measured with the fixture and without it."""

import pytest
import torch

from models import ConvNet
from pytest_flops import zoo


@pytest.mark.max_flops("180M", params="120K")
def test_convnet_forward(flops):
    model = ConvNet()
    m = flops(model, torch.randn(8, 3, 32, 32))
    assert m.by_module["head"] < 0.01 * m.flops  # the conv blocks do the work


@pytest.mark.max_flops("180M")
def test_convnet_inference_whole_test():
    # Without the flops fixture, everything the test body runs is counted.
    model = ConvNet().eval()
    with torch.no_grad():
        logits = model(torch.randn(8, 3, 32, 32))
    assert logits.shape == (8, 10)


@pytest.mark.max_flops(macs="4.2G", params="26M")
def test_resnet50_macs(flops):
    # compute=False runs on fake tensors: exact counts, no arithmetic, no activation memory.
    m = flops(zoo.resnet50(), torch.randn(1, 3, 224, 224), compute=False)
    assert m.macs == 4_089_184_256  # the published 4.09 GMACs
