r"""Evolution strategies (ES): gradients of a Gaussian-smoothed function from function values.

**The smoothed objective.** For $f:\mathbb R^d\to\mathbb R$ and $\sigma > 0$,

$$f_\sigma(x) = \mathbb E_{z\sim\mathcal N(0, I)}[f(x + \sigma z)], \qquad
\nabla f_\sigma(x) = \frac{1}{\sigma}\,\mathbb E_z[f(x + \sigma z)\, z]$$

(Stein's identity). $f_\sigma$ is smooth even when $f$ is not, and
$\nabla f_\sigma \to \nabla f$ as $\sigma \to 0$ for smooth $f$ (for a quadratic
they are equal; in general they differ by $O(\sigma^2)$).

**The estimators** (the three methods of TorchOpt's zero-order module), with
$z_1, \dots, z_N$ i.i.d. draws; **``num_samples`` = N counts draws**:

| method | estimate of $\nabla f_\sigma(x)$ | evaluations of $f$ |
|---|---|---|
| ``"naive"`` | $\frac1N\sum_n f(x+\sigma z_n)\,z_n/\sigma$ | $N$ |
| ``"forward"`` | $\frac1N\sum_n \big(f(x+\sigma z_n) - f(x)\big)\,z_n/\sigma$ | $N + 1$ |
| ``"antithetic"`` | $\frac1N\sum_n \big(f(x+\sigma z_n) - f(x-\sigma z_n)\big)\,z_n/(2\sigma)$ | $2N$ |

All three are unbiased for $\nabla f_\sigma(x)$ (the baseline $f(x)$ multiplies
$\mathbb E[z] = 0$; the $-z$ half has the same distribution as the $+z$ half).
**Scaling convention, used everywhere in gradlab:** the noise $z$ has unit
variance and the estimate is divided by $\sigma$ (as in TorchOpt); a seed that
draws $v = \sigma z$ and divides by $\sigma^2$ computes the same number.

**The family, one concern per module** (the subpackage; all names are re-exported here):

* :mod:`gradlab.es.point` — :func:`es_grad`, ``f`` a black box of one tensor, with
  its per-draw weights (:func:`es_weights`) and fitness shaping (:func:`centered_ranks`);
* :mod:`gradlab.es.population` — :func:`es_grad_model`, the same estimate for all
  parameters of an ``nn.Module``, fast (the ``nn.Sequential`` fast path is
  :mod:`gradlab.es.fastpath`);
* :mod:`gradlab.es.layer` — :func:`zero_order` and :class:`ZeroOrderModule`,
  the estimate inside autograd with TorchOpt's interface;
* :mod:`gradlab.es.lab` — the lab's helpers ``get_model_weights``,
  ``set_model_weights``, ``ES_grad``, ``ES_step`` (the lab's names, kept as documented aliases);
* :mod:`gradlab.es.noise` — where the perturbations come from (noise sources,
  including the shared :class:`~gradlab.es.noise.NoiseTable`);
* :mod:`gradlab.es.distributed` — ``es_grad_model(..., group=)`` across
  ``torch.distributed`` ranks, exchanging (offset, losses) per member
  (``torch.distributed`` is imported on first use).

The old flat paths (``gradlab.es_point``, ``gradlab.es_population``, ``gradlab.es_fastpath``,
``gradlab.es_autograd``, ``gradlab.es_lab``, ``gradlab.es_distributed``, ``gradlab.noise``)
are aliases of these modules.
"""
from __future__ import annotations

from . import distributed, fastpath, lab, layer, noise, point, population
from .layer import ZeroOrderModule, zero_order
from .lab import ES_grad, ES_step, get_model_weights, set_model_weights
from .point import (
    FITNESS_SHAPINGS,
    METHODS,
    centered_ranks,
    check_fitness_shaping,
    check_method,
    es_grad,
    es_weights,
)
from .population import es_grad_model
from .noise import NoiseTable, sample_noise

__all__ = [
    "METHODS",
    "FITNESS_SHAPINGS",
    "check_method",
    "check_fitness_shaping",
    "sample_noise",
    "NoiseTable",
    "centered_ranks",
    "es_weights",
    "es_grad",
    "es_grad_model",
    "zero_order",
    "ZeroOrderModule",
    "get_model_weights",
    "set_model_weights",
    "ES_grad",
    "ES_step",
]
