"""gradlab.latent: the discrete VAE's costs, bound and surrogate loss, checked by enumerating a tiny model."""
from __future__ import annotations

import itertools
import math

import torch
from torch.distributions import Bernoulli

from gradlab.expectation import exact_expectation_grad
from gradlab.latent import DiscreteVAE, PerItemSurrogate, bernoulli_logits

F64 = torch.float64
D, K = 5, 3
STATES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=K)), dtype=F64)  # all 2^K latent vectors


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    vae = DiscreteVAE(D, K).double()
    x = torch.bernoulli(torch.full((2, D), 0.4, dtype=F64), generator=torch.Generator().manual_seed(seed))
    return vae, x


def exact_negative_elbo(vae: DiscreteVAE, x: torch.Tensor) -> torch.Tensor:
    """Per image: sum_b q(b|x) [-log p(x|b)] - H(q) + K log 2, by enumerating b."""
    q = Bernoulli(logits=vae.encoder(x))  # (batch, K)
    log_q = q.log_prob(STATES[:, None, :]).sum(-1)  # (2^K, batch)
    log_lik = Bernoulli(logits=vae.decoder(STATES)[:, None, :]).log_prob(x).sum(-1)  # (2^K, batch)
    return (log_q.exp() * (-log_lik)).sum(0) - q.entropy().sum(-1) + K * math.log(2)


def test_cost_fn_is_the_summed_negative_log_likelihood():
    vae, x = tiny_model()
    b = STATES[[1, 6]].reshape(2, 1, K).expand(2, 2, K)  # 2 samples x 2 images
    expected = -Bernoulli(logits=vae.decoder(b)).log_prob(x).sum((-1, -2))
    torch.testing.assert_close(vae.cost_fn(x)(b), expected.detach())
    per_image = -Bernoulli(logits=vae.decoder(b)).log_prob(x).sum(-1)
    torch.testing.assert_close(vae.cost_fn(x, per_item=True)(b), per_image.detach())


def test_per_image_costs_give_the_same_exact_encoder_gradient_with_lower_variance():
    """score + RLOO per image (cost_fn(x, per_item=True)) and per joint sample: the same mean, the
    exact enumeration's; per image has the smaller variance (each image's score sees its own cost)."""
    from gradlab.expectation import expectation_grad

    vae, x = tiny_model(1)
    logits = vae.encoder(x).detach()
    exact = exact_expectation_grad(vae.cost_fn(x), bernoulli_logits, logits)
    runs = {}
    for per_item in (False, True):
        g = expectation_grad(vae.cost_fn(x, per_item), bernoulli_logits, logits, estimator="score",
                             num_samples=40_000, baseline="rloo", generator=torch.Generator().manual_seed(3))
        se = g.std(0) / math.sqrt(g.shape[0])
        assert ((g.mean(0) - exact).abs() < 5 * se).all()
        runs[per_item] = g.var(0).sum()
    print("variance joint", runs[False].item(), "per image", runs[True].item())
    assert runs[True] < runs[False]


def test_exact_bound_is_above_the_negative_log_likelihood_and_the_estimate_agrees():
    vae, x = tiny_model(1)
    with torch.no_grad():
        bound = exact_negative_elbo(vae, x)
        log_lik = Bernoulli(logits=vae.decoder(STATES)[:, None, :]).log_prob(x).sum(-1)  # (2^K, batch)
        neg_log_px = -(torch.logsumexp(log_lik, 0) - K * math.log(2))  # uniform prior
    assert torch.all(bound >= neg_log_px - 1e-12), (bound, neg_log_px)
    estimate = vae.negative_elbo(x, num_samples=20000, generator=torch.Generator().manual_seed(2))
    assert abs(estimate - bound.mean().item()) < 0.05 * bound.mean().item()


def test_surrogate_loss_gives_the_exact_encoder_gradient_from_exact_logit_gradients():
    """With the exact gradient of E_q f for the logits, the encoder's gradient equals that of the exact -ELBO."""
    vae, x = tiny_model(3)
    logits = vae.encoder(x).detach()
    exact_logit_grad = exact_expectation_grad(vae.cost_fn(x), bernoulli_logits, logits)
    loss = vae.surrogate_loss(x, exact_logit_grad.unsqueeze(0), generator=torch.Generator().manual_seed(4))
    got = torch.autograd.grad(loss, list(vae.encoder.parameters()))
    expected = torch.autograd.grad(exact_negative_elbo(vae, x).sum() / len(x), list(vae.encoder.parameters()))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_per_item_surrogate_starts_at_zero_and_sums_over_items():
    r = PerItemSurrogate(K).double()
    z = torch.randn(4, 2, K, dtype=F64)
    assert torch.equal(r(z), torch.zeros(4, dtype=F64))
    torch.nn.init.normal_(r.net[2].weight)
    torch.testing.assert_close(r(z), r.net(z).squeeze(-1).sum(-1))


def test_surrogate_loss_decoder_term_per_sample_value_and_gradient():
    """The decoder term is -(1/S) sum_s sum_images log p(x | b_s), divided by the batch size, with the
    b_s drawn from the encoder by ``generator``: its value (encoder estimates zero) and its gradient
    in the decoder's parameters equal that formula on the same draws (3 samples, 2 images, D != K)."""
    vae, x = tiny_model(5)
    S = 3
    zeros = torch.zeros(S, x.shape[0], K, dtype=F64)
    loss = vae.surrogate_loss(x, zeros, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        probs = torch.sigmoid(vae.encoder(x)).expand(S, *x.shape[:1], K)
    b = torch.bernoulli(probs, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(b[0], b[1]) or not torch.equal(b[1], b[2]), "the draws should differ"
    log_lik = Bernoulli(logits=vae.decoder(b)).log_prob(x).sum(-1)  # (S, batch)
    decoder = -log_lik.sum(-1).mean(0)
    entropy = Bernoulli(logits=vae.encoder(x)).entropy().sum()
    expected = (decoder - entropy) / x.shape[0]
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad(loss, list(vae.decoder.parameters()))
    want = torch.autograd.grad(expected, list(vae.decoder.parameters()))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
        assert g.abs().max() > 1e-3


def test_surrogate_loss_decoder_gradient_is_unbiased_by_enumeration():
    """The mean over many draws of the decoder gradient is that of the exact -ELBO / batch (enumerated b);
    tolerance from the standard error of independent single-sample losses (S = 1, 400 seeds)."""
    vae, x = tiny_model(6)
    params = list(vae.decoder.parameters())
    zeros = torch.zeros(1, x.shape[0], K, dtype=F64)
    rows = []
    g = torch.Generator().manual_seed(11)
    for _ in range(400):
        loss = vae.surrogate_loss(x, zeros, generator=g)
        rows.append(torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)]))
    rows = torch.stack(rows)
    exact = torch.autograd.grad(exact_negative_elbo(vae, x).sum() / len(x), params)
    exact = torch.cat([t.reshape(-1) for t in exact])
    se = rows.std(0) / math.sqrt(rows.shape[0])
    z = (rows.mean(0) - exact) / se.clamp_min(1e-12)
    assert z.abs().max() < 4.5, z
    # power: the per-pixel mean instead of the sum (a factor 1/D on the likelihood) is rejected
    assert ((rows.mean(0) / D - exact) / se.clamp_min(1e-12)).abs().max() > 4.5
