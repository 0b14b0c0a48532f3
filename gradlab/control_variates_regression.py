r"""Control variates with a known expectation, combined by regression (Chapter 5).

Take functions $h_1, \dots, h_K$ of the sample whose expectations $\mathbb E_{p_\lambda}[h_k]$
are known in closed form as functions of the distribution's parameters $\lambda$ (a constant,
the sample itself with $\mathbb E[x] = \mu$, its square with $\mathbb E[x^2] = \mu^2 + \sigma^2$,
...). Each gives a zero-mean control variate for the score-function estimate of coordinate $j$,

$$\begin{gathered}
u_{kj}(x) = h_k(x)\, s_j(x) - \partial_{\lambda_j} \mathbb E[h_k], \\
\mathbb E[u_{kj}] = 0 \\
(\text{the score identity applied to } h_k),
\end{gathered}$$

and $\hat g_{nj} = f(x_n) s_{nj} - c_j^\top u_{nj}$ is unbiased for every fixed $c_j \in \mathbb R^K$.
Its variance $\operatorname{Var}(y_j) - 2 c_j^\top \operatorname{Cov}(u_j, y_j) + c_j^\top
\operatorname{Var}(u_j) c_j$ with $y_j = f s_j$ is smallest at

$$c_j^\star = \operatorname{Var}(u_j)^{-1} \operatorname{Cov}(u_j, y_j)
\qquad (K = 1:\ c^\star = \operatorname{Cov}(u, y) / \operatorname{Var}(u)),$$

the coefficients of the least-squares regression of $y_j$ on $u_j$ (with an intercept): the normal
equations. :class:`RegressionControlVariates` plugs in sample moments. Where they come from matters:

* ``fit="same"``: fitted on the batch itself. $c_j$ depends on $x_n$, so $\mathbb E[c_j^\top u_{nj}]
  \ne 0$: **biased**, by $O(K/N)$.
* ``fit="crossfit"``: split the batch into ``num_folds`` folds; a sample's coefficients are fitted
  on the other folds only. **Unbiased** (independent of $x_n$).
* ``fit="loo"``: a sample's coefficients are fitted on the other $N - 1$ samples. **Unbiased**.

In the protocol's form $(f_n - b_{nj}) s_{nj} + \text{correction}_{nj}$:
$b_{nj} = \sum_k c_{kj} h_k(x_n)$ and correction$_{nj} = \sum_k c_{kj}\, \partial_{\lambda_j}\mathbb E[h_k]$.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
from torch import distributions as D

from .checks import check_callable, check_choice, check_int
from .control_variates import Baseline, ScoreBatch
from .distributions import distribution_params, rebuild, unwrap_independent

__all__ = ["RegressionControlVariates", "FEATURES", "fit_coefficients", "fold_ids"]

Features = Callable[[torch.Tensor], torch.Tensor]
Expectation = Callable[[D.Distribution], torch.Tensor]


def flat_samples(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).to(torch.get_default_dtype() if not x.is_floating_point() else x.dtype)


def flat_moment(value: torch.Tensor, dist: D.Distribution) -> torch.Tensor:
    """A moment of the event broadcast to the full sample shape and flattened: (D,)."""
    shape = dist.batch_shape + dist.event_shape
    return value.expand(shape).reshape(-1)


FEATURES = {
    # name: (h(x) -> (N, K), E[h] as a differentiable function of the distribution -> (K,))
    "constant": (lambda x: torch.ones(x.shape[0], 1, dtype=flat_samples(x).dtype, device=x.device),
                 lambda d: torch.ones(1, dtype=d.mean.dtype, device=d.mean.device)),
    "linear": (lambda x: torch.cat([torch.ones_like(flat_samples(x)[:, :1]), flat_samples(x)], 1),
               lambda d: torch.cat([torch.ones_like(d.mean.reshape(-1)[:1]), flat_moment(d.mean, d)])),
    "quadratic": (lambda x: torch.cat([torch.ones_like(flat_samples(x)[:, :1]), flat_samples(x), flat_samples(x) ** 2], 1),
                  lambda d: torch.cat([torch.ones_like(d.mean.reshape(-1)[:1]), flat_moment(d.mean, d),
                                       flat_moment(d.mean**2 + d.variance, d)])),
}
FEATURES_DOC = r"""``"constant"``: $h = 1$ (then $u = s$, a fitted constant baseline); ``"linear"``: $1, x_i$
($\mathbb E[x] = $ ``dist.mean``); ``"quadratic"``: $1, x_i, x_i^2$ ($\mathbb E[x^2] = $ mean$^2$ + variance)."""


def fold_ids(num_samples: int, fit: str, num_folds: int, device=None) -> torch.Tensor:
    """Which group each sample's coefficients are fitted WITHOUT: all 0 for ``"same"`` (nothing left
    out), contiguous folds for ``"crossfit"``, the sample itself for ``"loo"``."""
    index = torch.arange(num_samples, device=device)
    if fit == "same":
        return torch.zeros_like(index)
    if fit == "loo":
        return index
    return index * num_folds // num_samples


def fit_coefficients(u: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, leave_out: bool) -> torch.Tensor:
    r"""Least-squares coefficients per group, fitted on all samples NOT in the group (``leave_out``)
    or on all samples (not ``leave_out``).

    ``u`` (N, P, K) control variates, ``y`` (N, P) targets. Returns (G, P, K): per group $g$ and
    coordinate $j$, $c = S^{+} r$ with the centred sums $S = \sum u u^\top - \frac1m \sum u \sum u^\top$,
    $r = \sum u y - \frac1m \sum u \sum y$ over the $m$ fitting samples (the sample Cov/Var; the
    pseudo-inverse handles collinear features, e.g. $x = x^2$ for a Bernoulli).
    """
    count, num_groups = u.shape[0], int(groups.max()) + 1

    def sums(values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        total = values.sum(0, keepdim=True)
        if not leave_out:
            return total
        per_group = torch.zeros(num_groups, *values.shape[1:], dtype=values.dtype, device=values.device)
        return total - per_group.index_add_(0, groups, values)

    sizes = torch.bincount(groups, minlength=num_groups).to(u.dtype)
    m = (count - sizes if leave_out else torch.full((1,), float(count), dtype=u.dtype, device=u.device))
    m = m.clamp_min(1.0).reshape(-1, 1, 1)
    s_u, s_y = sums(u), sums(y)
    s_uu, s_uy = sums(u.unsqueeze(3) * u.unsqueeze(2)), sums(u * y.unsqueeze(2))
    gram = s_uu - s_u.unsqueeze(3) * s_u.unsqueeze(2) / m.unsqueeze(3)
    cross = s_uy - s_u * s_y.unsqueeze(2) / m
    return (torch.linalg.pinv(gram, hermitian=True) @ cross.unsqueeze(3)).squeeze(3)


class RegressionControlVariates(Baseline):
    r"""Control variates $h_k$ with known $\mathbb E[h_k]$, coefficients by least squares per coordinate.

    ``features``: a name in :data:`FEATURES` (""" + FEATURES_DOC + r""") or a callable
    ``h(x) -> (N, K)``, given together with ``expectation(dist) -> (K,)``, the closed form of
    $\mathbb E[h]$ written with ``dist``'s parameters (it is differentiated by autograd for
    $\nabla_\lambda \mathbb E[h]$). ``fit``: ``"same"`` (biased, $O(1/N)$), ``"crossfit"`` (default,
    ``num_folds`` folds) or ``"loo"`` (leave-one-out): see the module docstring. The regression is
    run per coordinate $j$ of the distribution's parameters, on $y_{nj} = f_n s_{nj}$ and
    $u_{nkj} = h_k(x_n) s_{nj} - \partial_j \mathbb E[h_k]$. Cost: $K$ feature evaluations per sample
    and a $K\times K$ solve per coordinate and fold (per sample for ``"loo"``); no extra evaluation of
    $f$. Needs per-sample scores (one cost per sample), so not the per-item surrogate.
    """

    per_coordinate = True

    def __init__(self, features: Union[str, Features] = "quadratic", expectation: Optional[Expectation] = None,
                 *, fit: str = "crossfit", num_folds: int = 2):
        if isinstance(features, str):
            check_choice(features, "features", sorted(FEATURES))
            if expectation is not None:
                raise ValueError(f"expectation must be None with features={features!r} (it has its own closed form)")
            features, expectation = FEATURES[features]
        else:
            check_callable(features, "features")
            if expectation is None:
                raise ValueError("expectation must be given with callable features: dist -> E[h(x)] of shape (K,)")
            check_callable(expectation, "expectation")
        self.features, self.expectation = features, expectation
        self.fit_mode = check_choice(fit, "fit", ["same", "crossfit", "loo"])
        self.num_folds = check_int(num_folds, "num_folds", minimum=2)

    def mean_jacobian(self, dist: D.Distribution, num_features: int) -> torch.Tensor:
        r"""$\partial_{\lambda_j} \mathbb E[h_k]$ as a (K, P) tensor, by autograd through ``expectation``.

        The last result is kept and reused while the parameters are the same (repeated batches at one
        $\theta$ pay for it once)."""
        params = {k: v.detach() for k, v in distribution_params(dist).items()}
        cached = getattr(self, "_last_jacobian", None)
        key = (type(dist), type(unwrap_independent(dist)), num_features)
        if (cached is not None and cached[0] == key and cached[1].keys() == params.keys()
                and all(cached[1][k].shape == v.shape and cached[1][k].device == v.device
                        and torch.equal(cached[1][k], v) for k, v in params.items())):
            return cached[2]
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            mean = self.expectation(rebuild(dist, leaves))
            if not isinstance(mean, torch.Tensor) or mean.shape != (num_features,):
                got = tuple(mean.shape) if isinstance(mean, torch.Tensor) else type(mean).__name__
                raise ValueError(f"expectation must return shape ({num_features},) (one per feature), got {got}")
            leaf_list, rows = list(leaves.values()), []
            for k in range(num_features):  # K rows of a small Jacobian (K features), none if E[h] is constant
                grads = (torch.autograd.grad(mean[k], leaf_list, retain_graph=True, allow_unused=True)
                         if mean.requires_grad else [None] * len(leaf_list))
                rows.append(torch.cat([(torch.zeros_like(v) if g is None else g).reshape(-1)
                                       for g, v in zip(grads, leaf_list)]))
        jac = torch.stack(rows).to(mean.dtype)
        self._last_jacobian = (key, {k: v.clone() for k, v in params.items()}, jac)
        return jac

    def terms(self, batch: ScoreBatch):
        """``(b, correction)`` from one fit per batch (what the score-function estimator calls)."""
        return self.fit(batch)

    def fit(self, batch: ScoreBatch) -> Tuple[torch.Tensor, torch.Tensor]:
        if batch.scores is None:
            raise ValueError("baseline=RegressionControlVariates needs per-sample scores; use gradlab.expectation_grad")
        scores = batch.scores.detach()
        count = scores.shape[0]
        minimum = {"same": 1, "crossfit": self.num_folds, "loo": 2}[self.fit_mode]
        if count < minimum:
            raise ValueError(f"num_samples must be >= {minimum} for fit={self.fit_mode!r}, got {count}")
        h = self.features(batch.samples.detach())
        if not isinstance(h, torch.Tensor) or h.dim() != 2 or h.shape[0] != count:
            got = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            raise ValueError(f"features must map the samples to shape ({count}, K), got {got}")
        h = h.to(scores.dtype)
        jac = self.mean_jacobian(batch.dist, h.shape[1]).to(scores.dtype)  # (K, P)
        u = h.unsqueeze(1) * scores.unsqueeze(2) - jac.T.unsqueeze(0)  # (N, P, K)
        y = batch.values.detach().to(scores.dtype).unsqueeze(1) * scores
        groups = fold_ids(count, self.fit_mode, self.num_folds, device=scores.device)
        coef = fit_coefficients(u, y, groups, leave_out=self.fit_mode != "same")[groups]  # (N, P, K)
        b = (coef * h.unsqueeze(1)).sum(2)
        correction = (coef * jac.T.unsqueeze(0)).sum(2)
        return b, correction

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        return self.fit(batch)[0]

    def correction(self, batch: ScoreBatch) -> torch.Tensor:
        return self.fit(batch)[1]
