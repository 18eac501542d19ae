r"""TherML's entropy :math:`S` and partition function from sampled posteriors (paper 003, eq. 19–20).

The equilibrium parameter law at temperature :math:`\sigma = 1/\beta^*` is
:math:`p^*(\theta) = q(\theta) e^{-\beta^* J(\theta)} / \mathcal{Z}(\beta^*)`. Because
:math:`\mathcal{Z}(0) = 1` for a normalized prior and
:math:`\frac{d}{d\beta}\log\mathcal{Z}(\beta) = -\langle J\rangle_\beta`,

.. math::

    \log \mathcal{Z}(\beta^*) = -\int_0^{\beta^*} \langle J \rangle_\beta \, d\beta, \qquad
    S = \mathrm{KL}(p^* \,\|\, q) = -\log\mathcal{Z} - \beta^* \langle J \rangle_{\beta^*},

with :math:`\langle J\rangle_\beta` estimated by SG-MCMC at each rung of a ladder
:math:`\beta_k = \beta^* t_k^a`, :math:`t_k = k/K` (dense near :math:`\beta = 0`, where
:math:`\langle J\rangle_\beta` changes fastest), and the integral by the trapezoid rule in
:math:`t`: :math:`\int_0^1 \langle J\rangle_{\beta(t)}\, a\beta^* t^{a-1} dt`, whose integrand
vanishes at :math:`t = 0` for :math:`a > 1`, so no rung is needed at :math:`\beta = 0`.

The ladder (:func:`inverse_temperature_ladder`) and the quadrature with its error propagation
(:func:`integrate_ladder`) stand alone, so a sampler of one's own (one that draws fresh latent
noise at every step, say) can feed its rung means to them; :func:`thermodynamic_integration`
samples each rung of a :class:`~thermossl.inference.potentials.Potential` with
:func:`~thermossl.inference.sample`.

.. warning:: Every rung is sampled with the same step :math:`h` on the scaled potential
    :math:`\beta J - \log q`, i.e. the kernel's step size at temperature :math:`1/\beta` is
    :math:`\varepsilon = h\beta`: a constant step stable at :math:`\beta^*` is stable on every
    rung, though slow to mix at small :math:`\beta`; a function of :math:`\beta` can do better. The
    result carries the kernel's :math:`O(h)` bias and the ladder's quadrature error as well as the
    Monte Carlo error it reports. The trapezoid's error includes a part proportional to
    :math:`J` itself (the plain rule does not integrate constants exactly), which dominates when
    :math:`J` sums over many examples; by default the last rung's weight is set so that the rule
    integrates constants exactly (``exact_for_constants``), which removes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import arviz as az
import torch
from thermossl.inference.potentials import Potential
from thermossl.inference.sampling import sample
from torch import Tensor
from tqdm.auto import tqdm

from thermossl._validation import check_positive, check_positive_integer

__all__ = [
    "ThermodynamicIntegration",
    "integrate_ladder",
    "inverse_temperature_ladder",
    "thermodynamic_integration",
]


class ThermodynamicIntegration(NamedTuple):
    r"""The estimate and its ingredients.

    :ivar torch.Tensor inverse_temperatures: the ladder :math:`\beta_k`, ``[K]``.
    :ivar torch.Tensor quadrature_weights: :math:`w_k` with
        :math:`\log\mathcal{Z} = -\sum_k w_k \langle J\rangle_{\beta_k}`, ``[K]``.
    :ivar torch.Tensor mean_objective: :math:`\langle J\rangle_{\beta_k}`, ``[K]``.
    :ivar torch.Tensor standard_error: their Monte Carlo standard errors (between chains), ``[K]``.
    :ivar torch.Tensor log_partition: :math:`\log\mathcal{Z}(\beta^*)`.
    :ivar torch.Tensor log_partition_error: its Monte Carlo standard error.
    :ivar torch.Tensor entropy: :math:`S = \mathrm{KL}(p^* \| q)`.
    :ivar torch.Tensor entropy_error: its Monte Carlo standard error (rungs independent).
    :ivar arviz.InferenceData posterior: the draws at :math:`\beta^*` (``None`` if not given).
    """

    inverse_temperatures: Tensor
    quadrature_weights: Tensor
    mean_objective: Tensor
    standard_error: Tensor
    log_partition: Tensor
    log_partition_error: Tensor
    entropy: Tensor
    entropy_error: Tensor
    posterior: az.InferenceData


def thermodynamic_integration(
    potential: Potential,
    temperature: float,
    *,
    step_size: float | Callable[[float], float],
    num_rungs: int = 24,
    exponent: float = 4.0,
    num_chains: int = 64,
    num_draws: int = 200,
    num_warmup: int = 500,
    kernel: str = "sgld",
    initial_position: Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
    exact_for_constants: bool = True,
    **sample_options,
) -> ThermodynamicIntegration:
    r"""Estimate :math:`\log\mathcal{Z}` and :math:`S` at ``temperature`` by thermodynamic integration.

    :param Potential potential: :math:`J` (a sum over the data) and the prior :math:`q`, which must
        be normalized (:math:`\log\mathcal{Z}(0) = 0`).
    :param float temperature: :math:`\sigma = 1/\beta^* > 0`.
    :param step_size: :math:`h`, the step on the scaled potential (see the warning above): a
        float, or a function ``beta -> h`` (larger steps where the law is broad, at small
        :math:`\beta`).
    :param int num_rungs: :math:`K`.
    :param float exponent: :math:`a` of the ladder :math:`\beta_k = \beta^*(k/K)^a`.
    :param int num_chains: chains per rung; each rung starts where the previous one ended.
    :param int num_draws: kept draws per chain and rung.
    :param int num_warmup: discarded steps per rung.
    :param str kernel: ``"sgld"``, ``"sghmc"`` or ``"psgld"``.
    :param torch.Tensor initial_position: ``[num_chains, P]`` start of the first rung (ideally
        prior draws); otherwise the sampler's default.
    :param bool exact_for_constants: the quadrature's last weight (see :func:`integrate_ladder`).
    :param sample_options: passed to :func:`~thermossl.inference.sample`.
    :raises ValueError: on a non-positive temperature, step, count or exponent, or a potential
        whose plate fixes a minibatch size smaller than the data (``J`` is evaluated on all data).
    """
    ladder = inverse_temperature_ladder(temperature, num_rungs, exponent)
    step_at = step_size if callable(step_size) else (lambda beta: step_size)
    check_positive_integer("num_chains", num_chains)
    if potential.fixed_batch_size and potential.batch_size != potential.data_size:
        raise ValueError(
            "the potential's plate fixes minibatches of "
            f"{potential.batch_size} < {potential.data_size}; thermodynamic integration evaluates "
            "J on all the data"
        )
    everything = torch.arange(potential.data_size, device=potential.device)
    means, errors, position, posterior = [], [], initial_position, None
    for rung, beta in enumerate(tqdm(ladder.tolist(), disable=not progress, desc="ladder")):
        posterior = sample(
            potential,
            kernel,
            step_size=_checked_step(step_at(beta), beta) * beta,
            temperature=1.0 / beta,
            num_chains=num_chains,
            num_draws=num_draws,
            num_warmup=num_warmup,
            initial_position=position,
            seed=seed + rung,
            progress=False,
            **sample_options,
        )
        draws = potential.layout.unconstrain(
            {
                name: torch.as_tensor(posterior.posterior[name].values, device=potential.device)
                for name in potential.layout.names
            }
        )  # [C, D, P]
        values = torch.vmap(torch.vmap(lambda u: potential.terms(u, everything)[0]))(draws)
        if not bool(torch.isfinite(values).all()):
            raise RuntimeError(
                f"non-finite objective on rung {rung} (beta={beta:.3g}); lower step_size"
            )
        chain_means = values.double().mean(1)
        means.append(chain_means.mean())
        errors.append(chain_means.std() / math.sqrt(num_chains))
        position = draws[:, -1]
    return integrate_ladder(
        torch.stack(means),
        torch.stack(errors),
        temperature=temperature,
        exponent=exponent,
        posterior=posterior,
        exact_for_constants=exact_for_constants,
    )


def inverse_temperature_ladder(temperature: float, num_rungs: int, exponent: float) -> Tensor:
    r"""The rungs :math:`\beta_k = \beta^* (k/K)^a`, :math:`k = 1, \dots, K`, as a float64 ``[K]``.

    :param float temperature: :math:`\sigma = 1/\beta^* > 0`.
    :param int num_rungs: :math:`K`.
    :param float exponent: :math:`a > 1` (the quadrature then needs no rung at :math:`\beta = 0`).
    :raises ValueError: on a non-positive temperature or count, or an exponent :math:`\le 1`.

    Example::

        >>> inverse_temperature_ladder(0.5, 4, 2.0)
        tensor([0.1250, 0.5000, 1.1250, 2.0000], dtype=torch.float64)
    """
    check_positive("temperature", temperature)
    check_positive_integer("num_rungs", num_rungs)
    if not exponent > 1:
        raise ValueError(
            f"exponent must be > 1 (the rule needs no rung at beta = 0), got {exponent!r}"
        )
    fractions = torch.arange(1, num_rungs + 1, dtype=torch.float64) / num_rungs
    return (1.0 / temperature) * fractions**exponent


def integrate_ladder(
    mean_objective: Tensor,
    standard_error: Tensor,
    *,
    temperature: float,
    exponent: float,
    posterior: az.InferenceData | None = None,
    exact_for_constants: bool = True,
) -> ThermodynamicIntegration:
    r""":math:`\log\mathcal{Z}` and :math:`S` from the rung means of any sampler, by the trapezoid rule.

    With :math:`t_k = k/K` and :math:`\beta_k = \beta^* t_k^a`
    (:func:`inverse_temperature_ladder`),

    .. math::

        \log\mathcal{Z} = -\sum_k w_k \langle J\rangle_{\beta_k}, \qquad
        w_k = \frac{a \beta^* t_k^{a-1}}{K} \;(\text{halved at } k = K), \qquad
        S = -\log\mathcal{Z} - \beta^* \langle J\rangle_{\beta^*},

    and, the rungs being sampled independently, the standard errors
    :math:`\big(\sum_k w_k^2 s_k^2\big)^{1/2}` of :math:`\log\mathcal{Z}` and
    :math:`\big(\sum_{k<K} w_k^2 s_k^2 + (w_K - \beta^*)^2 s_K^2\big)^{1/2}` of :math:`S`.

    :param torch.Tensor mean_objective: :math:`\langle J\rangle_{\beta_k}` (a sum over the data),
        ``[K]``, one per rung of :func:`inverse_temperature_ladder`.
    :param torch.Tensor standard_error: their Monte Carlo standard errors :math:`s_k`, ``[K]``.
    :param float temperature: :math:`\sigma = 1/\beta^*`.
    :param float exponent: :math:`a`.
    :param arviz.InferenceData posterior: the draws at :math:`\beta^*`, passed through.
    :param bool exact_for_constants: give the last rung the weight
        :math:`w_K = \beta^* - \sum_{k<K} w_k`, so that the rule integrates a constant exactly.
        The trapezoid's error on :math:`J`'s constant part, about
        :math:`a(a-1)\beta^* \bar J / (12K^2)`, otherwise enters :math:`\log\mathcal{Z}` and
        :math:`S` alike; it matters where :math:`J` is a sum over many examples and so far larger
        than :math:`S`. The errors are propagated with the weights used.
    :raises ValueError: as :func:`inverse_temperature_ladder`, or when the two vectors are not of
        one length :math:`K`.

    Example: a constant :math:`\langle J\rangle_\beta = 2` (a law that does not move with
    :math:`\beta`) gives :math:`\log\mathcal{Z} = -2\beta^*` and :math:`S = 0`; with
    :math:`a = 2` the integrand is linear in :math:`t` and the trapezoid rule exact::

        >>> means, errors = torch.full((8,), 2.0, dtype=torch.float64), torch.full((8,), 0.1)
        >>> result = integrate_ladder(means, errors, temperature=0.5, exponent=2.0)
        >>> float(result.log_partition), float(result.entropy)
        (-4.0, 0.0)
        >>> round(float(result.entropy_error), 2)  # the last rung enters S with weight w_K - beta*
        0.19
    """
    mean_objective = torch.as_tensor(mean_objective, dtype=torch.float64)
    standard_error = torch.as_tensor(standard_error, dtype=torch.float64)
    if mean_objective.dim() != 1 or mean_objective.shape != standard_error.shape:
        raise ValueError(
            "mean_objective and standard_error must be vectors of one length K (one per rung), "
            f"got shapes {tuple(mean_objective.shape)} and {tuple(standard_error.shape)}"
        )
    num_rungs = mean_objective.shape[0]
    ladder = inverse_temperature_ladder(temperature, num_rungs, exponent)
    target = 1.0 / temperature
    # trapezoid rule in t on [0, 1] for the integrand <J>_beta(t) * dbeta/dt, which is 0 at t = 0
    fractions = torch.arange(1, num_rungs + 1, dtype=torch.float64) / num_rungs
    weights = exponent * target * fractions ** (exponent - 1) / num_rungs
    weights[-1] /= 2
    if exact_for_constants:
        weights[-1] = target - weights[:-1].sum()
    log_partition = -(weights * mean_objective).sum()
    log_partition_error = (weights**2 * standard_error**2).sum().sqrt()
    entropy = -log_partition - target * mean_objective[-1]
    last_weight = weights[-1] - target
    entropy_error = (
        (weights[:-1] ** 2 * standard_error[:-1] ** 2).sum()
        + last_weight**2 * standard_error[-1] ** 2
    ).sqrt()
    return ThermodynamicIntegration(
        ladder,
        weights,
        mean_objective,
        standard_error,
        log_partition,
        log_partition_error,
        entropy,
        entropy_error,
        posterior,
    )


def _checked_step(value: float, beta: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"step_size must be > 0 at every rung, got {value!r} at beta={beta:.3g}")
    return float(value)
