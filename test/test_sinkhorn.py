"""The CPU's exp-domain Sinkhorn (models/superglue.py: exp_sinkhorn_iterations) computes the log-space
iterates for couplings of any span, also where scalings must be absorbed into the potentials, and with
zero marginals (padding). Compared with log_sinkhorn_iterations in float64."""
import pytest
import torch

from superglue_ros.models import superglue as superglue_module
from superglue_ros.models.superglue import (exp_sinkhorn_iterations, log_optimal_transport, log_sinkhorn_iterations,
                                            log_update)


def couplings_of(scores: torch.Tensor, mask0=None, mask1=None) -> tuple:
    """(couplings, log_mu, log_nu) that log_optimal_transport hands to sinkhorn(), in float64."""
    captured = {}

    def capture(couplings, log_mu, log_nu, iters):
        captured['args'] = couplings, log_mu, log_nu
        return log_sinkhorn_iterations(couplings, log_mu, log_nu, iters)
    original, superglue_module.sinkhorn = superglue_module.sinkhorn, capture
    try:
        log_optimal_transport(scores.double(), torch.tensor(1.0), 1, mask0, mask1)
    finally:
        superglue_module.sinkhorn = original
    return captured['args']


def scores_case(name: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(1, 300, 200, generator=generator) * 3
    if name == 'column far above':
        scores[:, :, 5] += 3000
    elif name == 'ramp over 20000':
        scores[:, :, :100] += torch.linspace(0, 20000, 100)
    elif name == 'scaled to span 1e5':
        scores *= 4000
    return scores


@pytest.mark.parametrize('name, absorbs', [('plain', False), ('scaled to span 1e5', False),
                                           ('column far above', True), ('ramp over 20000', True)])
@pytest.mark.parametrize('padded', [False, True])
def test_exp_domain_gives_the_log_space_iterates(monkeypatch, name, absorbs, padded):
    masks = (torch.arange(300)[None] < 250, torch.arange(200)[None] < 120) if padded else (None, None)
    couplings, log_mu, log_nu = couplings_of(scores_case(name), *masks)
    calls = []
    monkeypatch.setattr(superglue_module, 'log_update', lambda *args: calls.append(1) or log_update(*args))
    z = exp_sinkhorn_iterations(couplings, log_mu, log_nu, 100)
    assert bool(calls) == absorbs  # the case runs the path it is meant to test
    reference = log_sinkhorn_iterations(couplings, log_mu, log_nu, 100)
    assert torch.equal(torch.isfinite(z), torch.isfinite(reference))  # -inf exactly where padded
    assert (z.exp() - reference.exp()).abs().max() < 1e-12  # entries of the plan are <= 1
    assert ((z - reference)[torch.isfinite(reference) & (reference > -10)]).abs().max() < 1e-8  # relative, on entries > 4.5e-5



def test_no_real_keypoint_at_all_gives_an_empty_plan():
    couplings, log_mu, log_nu = couplings_of(torch.randn(1, 4, 3), torch.zeros(1, 4, dtype=torch.bool),
                                             torch.zeros(1, 3, dtype=torch.bool))
    for sinkhorn in (exp_sinkhorn_iterations, log_sinkhorn_iterations):
        z = sinkhorn(couplings, log_mu, log_nu, 10)
        assert (z == -torch.inf).all()
