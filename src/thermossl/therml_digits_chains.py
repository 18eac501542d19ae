r"""SG-MCMC chains of the digits encoder's output layer :math:`\theta` at a temperature (paper 003).

For world Q and the encoder's trunk fixed, TherML's optimal parameter law (eq. 19–20) is

.. math::

    p^*(\theta) = \frac{q(\theta)\, e^{-J(\theta)/\sigma}}{\mathcal{Z}}, \qquad
    J(\theta) = \rho R(\theta) + \delta D(\theta) + \gamma C(\theta), \qquad
    q(\theta) = N(0, s^2 I),

with :math:`R, D, C` sums over the :math:`N` training examples, **derived** from the programs of
:class:`~thermossl.models.therml_digits.DigitsWorlds` at the point :math:`\theta`
(:class:`~thermossl.models.therml_digits.ChainFunctionals`), and the prior not tempered. Since
:math:`J` sums over the data, :math:`\sigma = 1` is the Bayesian posterior of :math:`\theta`.

**Whitened coordinates.** The Hessian of :math:`J` in :math:`\theta` spans five or six orders of
magnitude (the output layer's inputs are far from white), beyond what plain SGLD or SGHMC can
cross in a few hundred steps. Its Kronecker-factored approximation (Martens & Grosse 2015),

.. math::

    \nabla^2_\theta J \approx G \otimes A, \qquad
    G = \nabla^2_b J \;(\text{the output layer's bias}), \qquad
    A = \tfrac1N \textstyle\sum_i \tilde h_i \tilde h_i^\top, \quad \tilde h_i = (h(x_i), 1),

has the eigenvectors :math:`V = V_G \otimes V_A` and eigenvalues :math:`\lambda = \lambda_G \otimes
\lambda_A` (:class:`KroneckerCurvature`), and the chains move
:math:`u` with :math:`\theta = V \operatorname{diag}(\beta\lambda + s^{-2})^{-1/2}\, u`, in which
the scaled potential :math:`\beta J - \log q` has a Hessian near the identity. A fixed linear
change of variables leaves the law of :math:`\theta`, :math:`S` and :math:`\log\mathcal{Z}` as they
are; it only sets the kernels' metric (a mass matrix).

**Steps.** At inverse temperature :math:`\beta` the library's kernels (:class:`~thermossl.inference.SGLD`,
:class:`~thermossl.inference.SGHMC`) run on :math:`U = J - \beta^{-1} \log q` at temperature
:math:`1/\beta`, which is the scaled potential :math:`\tilde U = \beta J - \log q` at temperature 1
in other units of time. A step :math:`h` on :math:`\tilde U` is the kernel step
:math:`\varepsilon = h\beta` for SGLD and :math:`\varepsilon = h\sqrt\beta` (friction
:math:`\alpha/\varepsilon`, :math:`\alpha` the momentum decay per step) for SGHMC, and :math:`h`
is a fraction :math:`c` of the stiffest whitened mode's time scale,
:math:`h_{\mathrm{SGLD}} = c/\tilde\lambda` and :math:`h_{\mathrm{SGHMC}} = c/\sqrt{\tilde\lambda}`,
with :math:`\tilde\lambda` the largest Hessian eigenvalue of :math:`\tilde U` in :math:`u` (power
iteration, :meth:`ThetaChains.largest_curvature`). Both kernels are stable for :math:`c < 2`.

**Noise.** Every step draws a minibatch and fresh standard-normal latent noise (the encoder's
:math:`z = \mu + s\varepsilon`) from an explicit :class:`torch.Generator`, so the gradient is an
unbiased estimate of :math:`\nabla J` with :math:`R, D, C` the expectations over
:math:`z \sim p(z \mid x, \theta)` that TherML defines. The noise is drawn outside the chains'
:func:`torch.vmap`, which forbids randomness; this is why the chains are stepped here rather than
by :func:`~thermossl.inference.sample`.

**Thermodynamic integration.** :func:`integrate_chains` samples each rung of
:func:`~thermossl.objectives.thermodynamic_integration.inverse_temperature_ladder` in turn, each
starting where the previous ended (the first from prior draws), measures :math:`J` on the whole
training set at every ``thin``-th step after the warm-up, and hands the rung means to
:func:`~thermossl.objectives.thermodynamic_integration.integrate_ladder` for
:math:`\log\mathcal{Z}` and :math:`S = \mathrm{KL}(p^* \| q)`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from thermossl._validation import check_positive, check_positive_integer
from thermossl.inference.gradients import ValueAndGradient
from thermossl.inference.sampling import MinibatchStream
from thermossl.inference.sghmc import SGHMC
from thermossl.inference.sgld import SGLD
from thermossl.models.therml_digits import DIGITS_SITES, ChainFunctionals, DigitsWorlds
from thermossl.objectives.therml import Functionals, Multipliers, objective
from thermossl.objectives.thermodynamic_integration import (
    ThermodynamicIntegration,
    integrate_ladder,
    inverse_temperature_ladder,
)

with warnings.catch_warnings():  # ArviZ announces an upcoming refactor at import time
    warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*")
    import arviz as az

__all__ = [
    "CHAIN_KERNELS",
    "ChainBatch",
    "KroneckerCurvature",
    "Rung",
    "ThetaChains",
    "integrate_chains",
    "sample_rung",
]

#: The kernels the chains can run.
CHAIN_KERNELS = ("sgld", "sghmc")


class ChainBatch(NamedTuple):
    """What one step sees: minibatch ``indices`` ``[B]`` and the latent noise ``[C, B, L]``."""

    indices: Tensor
    latent_noise: Tensor


class KroneckerCurvature(NamedTuple):
    r"""A Kronecker-factored :math:`\nabla^2_\theta J \approx V \operatorname{diag}(\lambda) V^\top`
    and the whitened coordinates it gives (see the module docs).

    :ivar torch.Tensor basis: :math:`V`, orthogonal ``[P, P]``, rows in :math:`\theta`'s layout.
    :ivar torch.Tensor curvature: :math:`\lambda \ge 0`, ``[P]``.
    :ivar float prior_scale: :math:`s`.
    """

    basis: Tensor
    curvature: Tensor
    prior_scale: float

    def scales(self, inverse_temperature: float) -> Tensor:
        r""":math:`(\beta\lambda + s^{-2})^{-1/2}`, the whitened coordinates' unit lengths ``[P]``."""
        return (inverse_temperature * self.curvature + self.prior_scale**-2).rsqrt()

    def to_theta(self, whitened: Tensor, inverse_temperature: float) -> Tensor:
        r""":math:`\theta = V \operatorname{diag}(\text{scales})\, u` for ``whitened`` ``[..., P]``."""
        return (whitened * self.scales(inverse_temperature)) @ self.basis.T

    def to_whitened(self, theta: Tensor, inverse_temperature: float) -> Tensor:
        """The inverse of :meth:`to_theta`."""
        return (theta @ self.basis) / self.scales(inverse_temperature)


class ThetaChains:
    r"""The chains' problem: :math:`J` and :math:`q(\theta)` on the training set, and the kernels.

    :param DigitsWorlds worlds: the programs; their point parameters are read at every step.
    :param Multipliers multipliers: :math:`\rho, \delta, \gamma` of :math:`J` (``sigma`` is ignored:
        the temperature is the kernel's).
    :param torch.Tensor pixels: training pixels ``[N, 64]``.
    :param torch.Tensor labels: training labels ``[N]``.
    :param float prior_scale: :math:`s` of :math:`q(\theta) = N(0, s^2 I)`.
    :param str kernel: ``"sgld"`` or ``"sghmc"``.
    :param int batch_size: :math:`B` of the gradient's minibatches.
    :param float step_fraction: :math:`c \in (0, 2)` (see the module docs).
    :param float momentum_decay: SGHMC's :math:`\alpha = \varepsilon C \in (0, 1)`.
    :raises ValueError: on a bad setting, or when :math:`\rho = \delta = \gamma = 0`.

    Example: the potential of two chains at :math:`\beta = 1`, with its gradient per chain::

        >>> from thermossl.models.therml_digits import digits_data
        >>> data, worlds = digits_data(), DigitsWorlds(latent_dim=4, hidden=32)
        >>> chains = ThetaChains(worlds, Multipliers(1, 1, 10), data.train_pixels,
        ...                      data.train_labels, prior_scale=0.5, batch_size=64)
        >>> generator = torch.Generator().manual_seed(0)
        >>> metric = chains.kronecker_curvature(worlds.head_vector(), generator)
        >>> u = metric.to_whitened(worlds.head_vector(), 1.0).expand(2, -1)
        >>> estimate = chains.potential(1.0, metric)(u, chains.batch(2, generator))
        >>> estimate.value.shape, estimate.gradient.shape
        (torch.Size([2]), torch.Size([2, 264]))
    """

    def __init__(
        self,
        worlds: DigitsWorlds,
        multipliers: Multipliers,
        pixels: Tensor,
        labels: Tensor,
        *,
        prior_scale: float,
        kernel: str = "sgld",
        batch_size: int = 128,
        step_fraction: float = 0.05,
        momentum_decay: float = 0.3,
    ):
        self.energy = multipliers.checked()._replace(sigma=0.0)
        if not any(self.energy):
            raise ValueError("rho, delta and gamma are all zero: the Gibbs law is the prior itself")
        if kernel not in CHAIN_KERNELS:
            raise ValueError(f"kernel must be one of {CHAIN_KERNELS}, got {kernel!r}")
        check_positive("prior_scale", prior_scale)
        check_positive_integer("batch_size", batch_size)
        if batch_size > pixels.shape[0]:
            raise ValueError(f"batch_size ({batch_size}) exceeds the data size ({pixels.shape[0]})")
        if not 0 < step_fraction < 2:
            raise ValueError(f"step_fraction must lie in (0, 2), got {step_fraction!r}")
        if not 0 < momentum_decay < 1:
            raise ValueError(f"momentum_decay must lie in (0, 1), got {momentum_decay!r}")
        worlds.check_inputs(pixels, labels)
        self.worlds = worlds
        self.functionals = ChainFunctionals(worlds)
        self.pixels, self.labels = pixels, labels
        self.prior_scale = float(prior_scale)
        self.kernel_name = kernel
        self.batch_size = batch_size
        self.step_fraction = float(step_fraction)
        self.momentum_decay = float(momentum_decay)

    @property
    def num_examples(self) -> int:
        return self.pixels.shape[0]

    # What the chains see ------------------------------------------------------------------------

    def batch(
        self, num_chains: int, generator: torch.Generator, stream: MinibatchStream | None = None
    ) -> ChainBatch:
        """The next minibatch (all examples without a ``stream``) and fresh latent noise for it."""
        indices = torch.arange(self.num_examples) if stream is None else stream.next()
        noise = torch.randn(
            num_chains,
            indices.shape[0],
            self.worlds.latent_dim,
            generator=generator,
            dtype=self.pixels.dtype,
        )
        return ChainBatch(indices, noise)

    def stream(self, generator: torch.Generator) -> MinibatchStream:
        """Minibatches of ``batch_size``, a fresh permutation of the examples per epoch."""
        return MinibatchStream(self.num_examples, self.batch_size, generator)

    def values(self, theta: Tensor, batch: ChainBatch) -> Functionals:
        """:math:`R, D, C` per example at each chain's :math:`\\theta` ``[C, P]``, each ``[C]``."""
        return self.functionals(theta, self.pixels, self.labels, batch.indices, batch.latent_noise)

    def objective(self, theta: Tensor, batch: ChainBatch) -> Tensor:
        r""":math:`J = N(\rho R + \delta D + \gamma C)` per chain, ``[C]`` (a sum over the examples)."""
        return self.num_examples * objective(self.values(theta, batch), self.energy, DIGITS_SITES)

    def log_prior(self, theta: Tensor) -> Tensor:
        r""":math:`\log q(\theta)` per chain, ``[C]``."""
        return torch.distributions.Normal(0.0, self.prior_scale).log_prob(theta).sum(-1)

    def scaled_potential(
        self, inverse_temperature: float, metric: KroneckerCurvature, batch: ChainBatch
    ) -> Callable[[Tensor], Tensor]:
        r""":math:`u \mapsto \beta J(\theta(u)) - \log q(\theta(u))` per chain, on one batch."""

        def potential(whitened: Tensor) -> Tensor:
            theta = metric.to_theta(whitened, inverse_temperature)
            return inverse_temperature * self.objective(theta, batch) - self.log_prior(theta)

        return potential

    def potential(
        self,
        inverse_temperature: float,
        metric: KroneckerCurvature,
        point_parameters: Sequence[nn.Parameter] = (),
    ) -> Callable[[Tensor, ChainBatch], ValueAndGradient]:
        r"""The kernels' gradient estimator for :math:`U = J - \beta^{-1}\log q` in whitened :math:`u`.

        ``(u [C, P], ChainBatch) -> ValueAndGradient``. With ``point_parameters``, each call also
        accumulates the gradient of the chain-averaged :math:`J/N` into their ``.grad`` (as
        ``loss.backward()`` does), from the same forward pass, so that an optimizer can move
        world Q along with the chains.
        """
        point_parameters = tuple(point_parameters)

        def estimate(positions: Tensor, batch: ChainBatch) -> ValueAndGradient:
            whitened = positions.detach().requires_grad_()
            scaled = self.scaled_potential(inverse_temperature, metric, batch)(whitened)
            value = scaled / inverse_temperature
            gradients = torch.autograd.grad(value.sum(), (whitened, *point_parameters))
            share = 1.0 / (whitened.shape[0] * self.num_examples)
            for parameter, gradient in zip(point_parameters, gradients[1:], strict=True):
                gradient = share * gradient  # the prior does not depend on them: d(J/N)
                parameter.grad = gradient if parameter.grad is None else parameter.grad + gradient
            return ValueAndGradient(value.detach(), gradients[0])

        return estimate

    # The metric and the steps -------------------------------------------------------------------

    def kronecker_curvature(self, theta: Tensor, generator: torch.Generator) -> KroneckerCurvature:
        r"""The Kronecker factors :math:`G, A` at ``theta`` ``[P]`` (module docs), eigendecomposed.

        :math:`G` is the Hessian of the derived :math:`J` on the whole training set (one fixed
        draw of the latent noise) with respect to the output layer's bias, its negative
        eigenvalues clamped to 0; :math:`A` the second moment of the layer's inputs with a 1
        appended.
        """
        size, outputs = theta.shape[-1], 2 * self.worlds.latent_dim
        batch = self.batch(1, generator)
        weights = theta.detach()[: size - outputs]

        def objective_of_bias(bias: Tensor) -> Tensor:
            return self.objective(torch.cat([weights, bias]).unsqueeze(0), batch)[0]

        bias_hessian = torch.autograd.functional.hessian(objective_of_bias, theta[-outputs:])
        with torch.no_grad():
            features = self.worlds.features(self.pixels)
        inputs = torch.cat([features, features.new_ones(features.shape[0], 1)], dim=-1)
        second_moment = inputs.T @ inputs / inputs.shape[0]
        output_curvature, output_basis = torch.linalg.eigh(0.5 * (bias_hessian + bias_hessian.T))
        input_curvature, input_basis = torch.linalg.eigh(second_moment)
        # theta is [weights (outputs x hidden, row-major), bias (outputs)]; the Kronecker product
        # runs over (output, input) pairs with the bias as the last input of each output
        hidden = inputs.shape[1] - 1
        rows = torch.arange(outputs * hidden).reshape(outputs, hidden)
        rows = torch.cat([rows, torch.arange(outputs * hidden, size).unsqueeze(1)], dim=1)
        basis = torch.empty(size, size, dtype=theta.dtype)
        basis[rows.flatten()] = torch.kron(output_basis, input_basis).to(theta.dtype)
        curvature = torch.kron(output_curvature.clamp_min(0.0), input_curvature.clamp_min(0.0))
        return KroneckerCurvature(basis, curvature.to(theta.dtype), self.prior_scale)

    def largest_curvature(
        self,
        theta: Tensor,
        inverse_temperature: float,
        metric: KroneckerCurvature,
        generator: torch.Generator,
        iterations: int = 20,
    ) -> float:
        r""":math:`\tilde\lambda`, the largest Hessian eigenvalue of :math:`\beta J - \log q` in :math:`u`.

        Power iteration on Hessian-vector products on the whole training set, with one fixed
        draw of the latent noise, at the point ``theta`` ``[P]``; the Rayleigh quotient of the
        last iterate, clamped at 0. A step-size scale, not a
        precise number (about 1 where the Kronecker factors fit).
        """
        potential = self.scaled_potential(inverse_temperature, metric, self.batch(1, generator))
        point = metric.to_whitened(theta.detach(), inverse_temperature).reshape(1, -1)
        point.requires_grad_()
        (gradient,) = torch.autograd.grad(potential(point).sum(), point, create_graph=True)
        direction = torch.randn(point.shape, generator=generator, dtype=point.dtype)
        curvature = 0.0
        for _ in range(iterations):
            direction = direction / direction.norm()
            (product,) = torch.autograd.grad(gradient, point, direction, retain_graph=True)
            curvature, direction = float((direction * product).sum()), product.detach()
        return max(curvature, 0.0)

    def kernel(
        self,
        inverse_temperature: float,
        metric: KroneckerCurvature,
        curvature: float,
        point_parameters: Sequence[nn.Parameter] = (),
    ) -> SGLD | SGHMC:
        r"""The kernel at :math:`\beta` in whitened coordinates, its step a fraction of the stiffest
        whitened mode's (module docs); ``curvature`` is :math:`\tilde\lambda`."""
        check_positive("inverse_temperature", inverse_temperature)
        check_positive("curvature", curvature)
        beta = float(inverse_temperature)
        estimator = self.potential(beta, metric, point_parameters)
        if self.kernel_name == "sgld":
            step = self.step_fraction / curvature
            return SGLD(estimator, step * beta, temperature=1.0 / beta)
        step = self.step_fraction / math.sqrt(curvature) * math.sqrt(beta)
        return SGHMC(estimator, step, friction=self.momentum_decay / step, temperature=1.0 / beta)


class Rung(NamedTuple):
    r"""What one rung of the ladder kept, every ``thin``-th step after the warm-up.

    :ivar torch.Tensor positions: :math:`\theta`, ``[C, D, P]``.
    :ivar torch.Tensor objective: :math:`J` on the whole training set (fresh latent noise), ``[C, D]``.
    :ivar dict statistics: the kernel's diagnostics at those steps (``potential``, the minibatch
        :math:`U`; ``step_size``; for SGHMC ``kinetic_temperature``...), each ``[C, D]``.
    :ivar torch.Tensor final_position: :math:`\theta` where the chains stopped, ``[C, P]``.
    """

    positions: Tensor
    objective: Tensor
    statistics: dict[str, Tensor]
    final_position: Tensor


def sample_rung(
    chains: ThetaChains,
    inverse_temperature: float,
    initial_position: Tensor,
    *,
    metric: KroneckerCurvature,
    curvature: float,
    num_warmup: int,
    num_draws: int,
    thin: int,
    generator: torch.Generator,
) -> Rung:
    r"""Run the chains at :math:`\beta` from :math:`\theta` = ``initial_position`` ``[C, P]``.

    :param KroneckerCurvature metric: the whitened coordinates the kernel moves in.
    :param float curvature: :math:`\tilde\lambda` (:meth:`ThetaChains.largest_curvature`).
    :raises RuntimeError: when a chain's position stops being finite, naming the step and the
        inverse temperature (lower ``step_fraction``).
    """
    for name, value in (("num_draws", num_draws), ("thin", thin)):
        check_positive_integer(name, value)
    if not isinstance(num_warmup, int) or num_warmup < 0:
        raise ValueError(f"num_warmup must be an integer >= 0, got {num_warmup!r}")
    beta = float(inverse_temperature)
    kernel = chains.kernel(beta, metric, curvature)
    num_chains = initial_position.shape[0]
    stream = chains.stream(generator)
    state = kernel.init(metric.to_whitened(initial_position.detach(), beta))
    positions, objectives, statistics = [], [], {}
    for step in range(num_warmup + num_draws * thin):
        batch = chains.batch(num_chains, generator, stream)
        state, info = kernel.step(state, batch, generator=generator)
        if not bool(torch.isfinite(state.position).all()):
            raise RuntimeError(
                f"non-finite theta at step {step} (beta={beta:.3g}); lower step_fraction"
            )
        if step < num_warmup or (step - num_warmup) % thin != thin - 1:
            continue
        theta = metric.to_theta(state.position, beta)
        positions.append(theta)
        with torch.no_grad():
            objectives.append(chains.objective(theta, chains.batch(num_chains, generator)))
        for name, value in info._asdict().items():
            value = torch.as_tensor(value, dtype=theta.dtype).expand(num_chains)
            statistics.setdefault(name, []).append(value)
    return Rung(
        torch.stack(positions, dim=1),
        torch.stack(objectives, dim=1),
        {name: torch.stack(series, dim=1) for name, series in statistics.items()},
        metric.to_theta(state.position, beta),
    )


def integrate_chains(
    chains: ThetaChains,
    temperature: float,
    initial_position: Tensor,
    *,
    metric: KroneckerCurvature,
    curvature: float,
    num_rungs: int,
    exponent: float,
    num_warmup: int,
    num_draws: int,
    thin: int,
    generator: torch.Generator,
    progress: bool = True,
) -> ThermodynamicIntegration:
    r""":math:`\log\mathcal{Z}` and :math:`S` at ``temperature`` by thermodynamic integration.

    Samples every rung with :func:`sample_rung` (the first from ``initial_position``, ideally
    prior draws; each next one from where the previous stopped), in the whitened coordinates of
    ``metric`` at that rung's :math:`\beta` with the step set by ``curvature`` (the largest
    whitened curvature at :math:`\beta^*`, an upper bound for the smaller :math:`\beta`), and
    integrates the rung means of :math:`J` with
    :func:`~thermossl.objectives.thermodynamic_integration.integrate_ladder`, its last weight set
    so that the constant part of :math:`J` (a sum over thousands of examples, far larger than
    :math:`S`) is integrated exactly. The standard error of each mean is the spread of the
    :math:`C` chain means, :math:`/\sqrt{C}`.

    :returns: the :class:`~thermossl.objectives.thermodynamic_integration.ThermodynamicIntegration`
        (sums over the :math:`N` examples), whose ``posterior`` holds the last rung's draws as
        :class:`arviz.InferenceData`: ``posterior.theta`` ``(chain, draw, theta_dim_0)`` and
        ``sample_stats`` with ``objective`` (:math:`J` on all examples), ``potential`` and the
        kernel's other diagnostics.
    :raises ValueError: with fewer than 2 chains (no error bars), or a bad ladder.
    """
    ladder = inverse_temperature_ladder(temperature, num_rungs, exponent)
    num_chains = initial_position.shape[0]
    if num_chains < 2:
        raise ValueError("thermodynamic integration needs at least 2 chains for its error bars")
    means, errors, position, rung = [], [], initial_position, None
    for beta in tqdm(ladder.tolist(), disable=not progress, desc="ladder", leave=False):
        rung = sample_rung(
            chains,
            beta,
            position,
            metric=metric,
            curvature=curvature,
            num_warmup=num_warmup,
            num_draws=num_draws,
            thin=thin,
            generator=generator,
        )
        chain_means = rung.objective.double().mean(1)
        means.append(chain_means.mean())
        errors.append(chain_means.std() / math.sqrt(num_chains))
        position = rung.final_position
    posterior = az.from_dict(
        posterior={"theta": rung.positions.cpu().numpy()},
        sample_stats={
            "objective": rung.objective.cpu().numpy(),
            **{name: value.cpu().numpy() for name, value in rung.statistics.items()},
        },
        attrs={
            "kernel": chains.kernel_name,
            "temperature": float(temperature),
            "tempering": "likelihood",
            "prior_scale": chains.prior_scale,
            "library": "thermossl",
        },
    )
    return integrate_ladder(
        torch.stack(means),
        torch.stack(errors),
        temperature=temperature,
        exponent=exponent,
        posterior=posterior,
        exact_for_constants=True,
    )
