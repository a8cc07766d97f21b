"""One training step: forward, backward and optimizer, with separate forward/backward budgets."""

import pytest
import torch
import torch.nn.functional as F

from models import ConvNet
from pytest_flops import parse_quantity


@pytest.mark.max_flops("2G")  # the whole step
def test_training_step(flops):
    torch.manual_seed(0)
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images, labels = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))

    with flops.counting(model) as c:
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    m = c.measurement
    assert m.forward_flops <= parse_quantity("700M")
    # Backward computes gradients of weights and activations: about twice the forward
    # (a little less here: the input images need no gradient).
    assert m.backward_flops <= 2 * m.forward_flops
