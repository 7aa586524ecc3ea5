"""Optimiser pieces: weight-decay groups, EMA, swapping EMA weights in and out, AMP choice."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from train.optim import EMA, Stepper, ema_weights, one_cycle, param_groups, use_amp


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_weight_decay_skips_biases_norms_and_frozen_parameters():
    net = _net()
    net[2].weight.requires_grad_(False)
    decay, no_decay = param_groups(net, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 4])]
    assert {id(p) for p in no_decay["params"]} == {id(net[0].bias), id(net[1].weight), id(net[1].bias),
                                                  id(net[2].bias)}


def test_ema_moves_towards_the_live_weights_and_copies_counters():
    net = _net()
    ema = EMA(net, decay=0.75)
    before = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(4.0)
    net.train()(torch.randn(5, 4))  # BatchNorm counts a batch
    ema.update(net)
    assert torch.allclose(ema.module[0].weight, before + 1.0)
    assert int(ema.module[1].num_batches_tracked) == 1


def test_ema_weights_are_swapped_in_and_the_live_ones_restored():
    net = _net()
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        net[0].weight.add_(2.0)
    live = net[0].weight.detach().clone()
    with ema_weights(net, ema) as inside:
        assert inside is net and torch.equal(net[0].weight, ema.module[0].weight)
    assert torch.equal(net[0].weight, live)
    with ema_weights(net, None):
        assert torch.equal(net[0].weight, live)


def test_amp_only_where_asked_or_on_cuda():
    cpu = torch.device("cpu")
    assert not use_amp("auto", cpu) and not use_amp("off", cpu) and use_amp("on", cpu)
    assert use_amp("auto", torch.device("cuda", 0))


def test_stepper_resumes_where_it_left_off():
    torch.manual_seed(0)
    net, tags = nn.Linear(4, 2 * 3), torch.nn.functional.normalize(torch.randn(5, 3), dim=1)
    x, y = torch.randn(6, 4), torch.rand(6, 5) < 0.4

    def stepper(module: nn.Module) -> Stepper:
        return Stepper(module, lambda t: module(t).view(-1, 2, 3), tags, 1e-2, 1e-4, 20, 0.01, False,
                       torch.device("cpu"), clip_grad=1.0, ema=0.9)

    first = stepper(net)
    first.step(x, y)
    twin = nn.Linear(4, 6)
    twin.load_state_dict(net.state_dict())
    second = stepper(twin)
    second.load_state_dict(copy.deepcopy(first.state_dict()))  # as if read back from state.pt
    assert second.steps_done == 1 and second.lr == first.lr
    first.step(x, y)
    second.step(x, y)
    assert torch.allclose(net.weight, twin.weight) and torch.allclose(first.eval_module.weight,
                                                                      second.eval_module.weight)



@pytest.mark.parametrize("total", [1, 2, 3, 9, 10, 11, 20, 100])
def test_one_cycle_steps_through_any_run_length(total):
    """OneCycle must step through any run length (exactly 10 steps once divided by zero in torch)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1e-3)
    schedule = one_cycle(optimizer, 1e-3, total)
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(total - 1):
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert all(math.isfinite(rate) and 0 < rate <= 1e-3 + 1e-12 for rate in rates)
