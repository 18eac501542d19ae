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

.. warning:: Every rung is sampled with the same step :math:`h` on the scaled potential
    :math:`\beta J - \log q`, i.e. the kernel's step size at temperature :math:`1/\beta` is
    :math:`\varepsilon = h\beta`: a constant step stable at :math:`\beta^*` is stable on every
    rung, though slow to mix at small :math:`\beta`; a function of :math:`\beta` can do better. The
    result carries the kernel's :math:`O(h)` bias and the ladder's quadrature error as well as the
    Monte Carlo error it reports.
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

__all__ = ["ThermodynamicIntegration", "thermodynamic_integration"]


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
    :ivar arviz.InferenceData posterior: the draws at :math:`\beta^*`.
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
    :param sample_options: passed to :func:`~thermossl.inference.sample`.
    :raises ValueError: on a non-positive temperature, step, count or exponent, or a potential
        whose plate fixes a minibatch size smaller than the data (``J`` is evaluated on all data).
    """
    check_positive("temperature", temperature)
    step_at = step_size if callable(step_size) else (lambda beta: step_size)
    if not exponent > 1:
        raise ValueError(
            f"exponent must be > 1 (the rule needs no rung at beta = 0), got {exponent!r}"
        )
    for name, value in (("num_rungs", num_rungs), ("num_chains", num_chains)):
        check_positive_integer(name, value)
    if potential.fixed_batch_size and potential.batch_size != potential.data_size:
        raise ValueError(
            "the potential's plate fixes minibatches of "
            f"{potential.batch_size} < {potential.data_size}; thermodynamic integration evaluates "
            "J on all the data"
        )
    target = 1.0 / temperature
    ladder = target * (torch.arange(1, num_rungs + 1, dtype=torch.float64) / num_rungs) ** exponent
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
    mean_objective, standard_error = torch.stack(means), torch.stack(errors)
    # trapezoid rule in t on [0, 1] for the integrand <J>_beta(t) * dbeta/dt, which is 0 at t = 0
    fractions = torch.arange(1, num_rungs + 1, dtype=torch.float64) / num_rungs
    weights = exponent * target * fractions ** (exponent - 1) / num_rungs
    weights[-1] /= 2
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
