r"""A small discrete variational autoencoder: the book's test bed for estimators of discrete gradients.

Binary data $x\in\{0,1\}^D$, binary latents $b\in\{0,1\}^K$ with a uniform prior, a linear
Bernoulli decoder $p(x\mid b) = \prod_i\mathrm{Bernoulli}(x_i;\sigma(W_d b + c_d)_i)$ and a
linear Bernoulli encoder $q(b\mid x) = \prod_k\mathrm{Bernoulli}(b_k;\sigma(W_e x + c_e)_k)$.
The loss is the negative evidence lower bound

.. math::

    -\mathrm{ELBO}(x) = \mathbb E_{q(b\mid x)}[-\log p(x\mid b)] - H(q(\cdot\mid x)) + K\log 2 .

The entropy is closed-form and the decoder's gradient is a plain average over samples; the
encoder's logits $\lambda$ reach the loss only through $b$, so their gradient
$\nabla_\lambda\mathbb E_{b\sim\mathrm{Bernoulli}(\sigma(\lambda))}[f(b)]$, $f(b) = -\log p(x\mid b)$,
is estimated by any estimator of the one protocol (:func:`gradlab.expectation_grad`'s), per image
with ``cost_fn(x, per_item=True)``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn
from torch.distributions import Bernoulli

__all__ = ["DiscreteVAE", "PerItemSurrogate", "bernoulli_logits"]


def bernoulli_logits(lam: torch.Tensor) -> Bernoulli:
    """``make_dist`` for estimators over the logits themselves."""
    return Bernoulli(logits=lam)


class PerItemSurrogate(nn.Module):
    r"""A RELAX surrogate $r_\phi(z) = \sum_i \mathrm{MLP}(z_i)$ over the items (images) of a minibatch.

    ``z`` has shape ``(num_samples, batch, num_latents)``; the output ``(num_samples,)``. The last
    layer starts at zero, so RELAX starts as REBAR.
    """

    def __init__(self, num_latents: int, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(num_latents, hidden), nn.ELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(-1).sum(-1)


class DiscreteVAE(nn.Module):
    """Linear Bernoulli encoder and decoder with ``num_latents`` binary latents."""

    def __init__(self, num_inputs: int = 64, num_latents: int = 16, data_mean: Optional[torch.Tensor] = None):
        super().__init__()
        self.num_latents = num_latents
        self.encoder = nn.Linear(num_inputs, num_latents)
        self.decoder = nn.Linear(num_latents, num_inputs)
        if data_mean is not None:  # start the decoder at the pixel means: a sensible first reconstruction
            with torch.no_grad():
                self.decoder.bias.copy_(torch.logit(data_mean.clamp(0.02, 0.98)))

    def cost_fn(self, x: torch.Tensor, per_item: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
        r"""$f(b) = -\sum_{\text{images}}\log p(x\mid b)$ with the decoder frozen: ``(S, batch, K) -> (S,)``.

        ``per_item=True``: one cost per sample and image, ``(S, batch)`` (the encoder's distribution
        is batched over the images, so the estimators form their baselines per image).
        """
        w, c = self.decoder.weight.detach(), self.decoder.bias.detach()

        def f(b: torch.Tensor) -> torch.Tensor:
            log_lik = Bernoulli(logits=b @ w.T + c, validate_args=False).log_prob(x).sum(-1)
            return -log_lik if per_item else -log_lik.sum(-1)

        return f

    def surrogate_loss(self, x: torch.Tensor, encoder_grads: torch.Tensor, generator=None) -> torch.Tensor:
        r"""A scalar whose gradient is the per-image negative ELBO's, given estimates for the encoder logits.

        ``encoder_grads`` has shape ``(S, batch, K)`` (per-sample estimates of $\nabla_\lambda\mathbb E f$);
        the decoder term uses ``S`` fresh samples of $b$ from the encoder.
        """
        logits = self.encoder(x)
        num_samples, batch = encoder_grads.shape[0], x.shape[0]
        probs = torch.sigmoid(logits.detach()).expand(num_samples, *logits.shape)
        b = torch.bernoulli(probs, generator=generator)
        decoder_cost = -Bernoulli(logits=self.decoder(b)).log_prob(x).sum((-1, -2)).mean()
        entropy = Bernoulli(logits=logits).entropy().sum()
        return ((logits * encoder_grads.mean(0)).sum() - entropy + decoder_cost) / batch

    @torch.no_grad()
    def negative_elbo(self, x: torch.Tensor, num_samples: int = 16, generator=None) -> float:
        """Monte Carlo estimate of the mean negative ELBO in nats per image."""
        q = Bernoulli(logits=self.encoder(x))
        b = torch.bernoulli(q.probs.expand(num_samples, *q.probs.shape), generator=generator)
        log_lik = Bernoulli(logits=self.decoder(b)).log_prob(x).sum(-1).mean(0)
        return (-log_lik - q.entropy().sum(-1) + self.num_latents * math.log(2)).mean().item()
