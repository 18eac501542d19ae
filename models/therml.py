r"""TherML's two worlds as Pyro programs, and the toy of its Appendix B (paper 003).

World P is the world we have (eq. 2): a data process :math:`\phi \to x \to y`, a training
procedure's distribution :math:`p(\theta \mid \{x, y\})` over the encoder's parameters, and the
encoder :math:`p(z \mid x, \theta)`. World Q is the world we want (eq. 3):
:math:`q(\theta) \prod_i q(z_i)\, q(x_i \mid z_i)\, q(y_i \mid z_i)`.

Read as a Pyro (model, guide) pair, world Q is the model and world P the guide, and the derived
bound (:func:`~thermossl.objectives.derive_bound`) splits into exactly the four functionals of §1.1,
one per sample site (:mod:`thermossl.objectives.therml` reads them off):

.. math::

    \mathcal{L}_\theta = -S, \qquad \mathcal{L}_z = -R, \qquad \mathcal{L}_x = -D, \qquad
    \mathcal{L}_y = -C .

:class:`CategoricalWorlds` writes the pair once for a categorical latent, data and label (the
latent is enumerated, so :math:`R, D, C` are exact sums); its subclasses supply the tables.
:class:`ToyWorlds` is the 184-parameter model of Appendix B and :class:`HandCraftedToy` the optimal
hand-crafted model of its Figure 3. :func:`toy_data` is the data process.

**Reconstruction-free world Q** (Appendix A, eq. 43): :math:`q(\theta) \prod_i q(z_i \mid x_i)\,
q(y_i \mid z_i)`, the predictive model :math:`X \to Z \to Y` with no decoder. A subclass that
returns a table from :meth:`CategoricalWorlds.predictive_logits` gets this world Q; the pair's
``z`` term is then the *volume*
:math:`\mathcal{L}_z = -V = -\sum_i \langle \log p(z_i \mid x_i, \theta) / q(z_i \mid x_i)
\rangle_P`, and there is no ``x`` site. ``ToyWorlds(reconstruction_free=True)`` is the toy's.

**The toy's data process.** :math:`z \sim \mathrm{Bernoulli}(0.7)`,
:math:`h \mid z \sim N(\mu_z, 1)` with :math:`\mu_0 = -\mu`, :math:`\mu_1 = \mu`, :math:`x` the bin
of :math:`h` among 30 equal bins on :math:`[-3, 3]` (tails folded into the end bins) and
:math:`y = z`. The paper fixes :math:`\mu` by :math:`I(x; z) = 0.5` nats without listing it; on
this bin range the solution is :math:`\mu \approx 1.666` (:func:`toy_mean`).

**Reading of the 184 parameters** (the paper's count, 60 + 60 + 4 + 30 + 30): with bin positions
:math:`u_j \in [-1, 1]` and latent positions :math:`s_k \in [-1, 1]`,

.. math::

    p(z = k \mid x = j, \theta) \propto e^{-(\theta_k u_j - b^e_k)^2}, \quad
    q(x = j \mid z = k) \propto e^{-(w^d_k u_j - b^d_k)^2}, \quad
    q(y \mid z = k) \propto e^{-(w^c_y s_k - b^c_y)^2}, \quad q(z = k) = \pi_k :

one (weight, bias) pair per latent value in the encoder (60) and in the decoder (60), one per class
in the classifier (4), 30 marginal logits and 30 :math:`\alpha_k`. The encoder weights
:math:`\theta_k` are the stochastic parameters: world P draws them with Achille & Soatto's
multiplicative log-normal noise, :math:`\theta_k = \bar\theta_k \varepsilon_k`,
:math:`\log \varepsilon_k \sim N(-\alpha_k / 2, \alpha_k)` (so :math:`E[\theta_k] = \bar\theta_k`),
and world Q's prior is :math:`q(\theta_k) = \mathrm{LogNormal}(m_q, s_q^2)`. Because
:math:`(\theta u - b)^2 = (-\theta u + b)^2`, positive weights lose no generality. The other
parameters are point estimates, the same in both worlds, and so add nothing to :math:`S`.

.. warning:: The paper's :math:`S` uses Achille & Soatto's improper log-uniform prior, for which
    :math:`S` is defined up to a constant; the proper log-normal prior used here makes :math:`S`
    an honest relative entropy (:math:`\ge 0`) at the cost of two hyperparameters,
    ``prior_loc`` and ``prior_scale``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.nn import PyroModule, pyro_method
from scipy.optimize import brentq
from scipy.stats import norm
from torch import Tensor, nn

from thermossl._validation import check_positive, check_positive_integer

__all__ = [
    "TOY_BIN_RANGE",
    "TOY_MUTUAL_INFORMATION",
    "TOY_NUM_BINS",
    "TOY_NUM_EXAMPLES",
    "TOY_POSITIVE_RATE",
    "CategoricalWorlds",
    "CommonNoiseLogNormal",
    "HandCraftedToy",
    "ToyData",
    "ToyWorlds",
    "toy_data",
    "toy_joint",
    "toy_mean",
]

#: Number of equal bins of the observed :math:`x`.
TOY_NUM_BINS = 30
#: The binned interval; values outside it fall into the end bins.
TOY_BIN_RANGE = (-3.0, 3.0)
#: :math:`p(z = 1)`.
TOY_POSITIVE_RATE = 0.7
#: The target :math:`I(x; z)` in nats, which fixes the class means.
TOY_MUTUAL_INFORMATION = 0.5
#: Size of the finite training set.
TOY_NUM_EXAMPLES = 50


# The data process ---------------------------------------------------------------------------------


def _joint_for_mean(mean: float) -> Tensor:
    """:math:`p(x, y)` as a ``[30, 2]`` float64 table for class means :math:`\\mp` ``mean``."""
    edges = torch.linspace(*TOY_BIN_RANGE, TOY_NUM_BINS + 1, dtype=torch.float64).numpy()
    edges[0], edges[-1] = -math.inf, math.inf
    columns = [
        (1.0 - TOY_POSITIVE_RATE) * torch.from_numpy(norm.cdf(edges, -mean)).diff(),
        TOY_POSITIVE_RATE * torch.from_numpy(norm.cdf(edges, mean)).diff(),
    ]
    return torch.stack(columns, dim=-1)


def _mutual_information(joint: Tensor) -> float:
    """:math:`I(x; y)` in nats of a joint table (zero cells contribute nothing)."""
    product = joint.sum(-1, keepdim=True) * joint.sum(-2, keepdim=True)
    ratio = torch.where(joint > 0, joint / product, torch.ones_like(joint))
    return float((joint * ratio.log()).sum())


@functools.cache
def toy_mean() -> float:
    r"""The class mean :math:`\mu` at which the binned toy has :math:`I(x; z) = 0.5` nats.

    Solved by Brent's method to an absolute tolerance of :math:`10^{-13}`.

    Example::

        >>> round(toy_mean(), 4)
        1.6661
    """
    return brentq(
        lambda mean: _mutual_information(_joint_for_mean(mean)) - TOY_MUTUAL_INFORMATION,
        0.1,
        3.0,
        xtol=1e-13,
    )


def toy_joint() -> Tensor:
    """The exact :math:`p(x, y)` of the toy as a ``[30, 2]`` float64 table (rows: bins)."""
    return _joint_for_mean(toy_mean())


class ToyData(NamedTuple):
    r"""A distribution over the toy's :math:`(x, y)` cells and what is known about it.

    :ivar torch.Tensor joint: ``[30, 2]`` float64 table of :math:`p(x, y)`: the exact law, or the
        empirical law of the finite set.
    :ivar torch.Tensor examples: ``[N, 2]`` (bin, label) rows of the finite set; ``None`` for the
        exact distribution.
    :ivar float mutual_information: the exact :math:`I(x; z)` of the process (0.5 nats).
    """

    joint: Tensor
    examples: Tensor | None
    mutual_information: float

    @property
    def num_examples(self) -> int | None:
        """:math:`N`, or ``None`` for the exact distribution."""
        return None if self.examples is None else int(self.examples.shape[0])

    def cells(self) -> tuple[Tensor, Tensor, Tensor]:
        """The cells of positive probability as ``(x, y, probability)`` vectors: the inputs of
        :class:`CategoricalWorlds` (all 60 for the exact law, the observed ones for a finite set)."""
        x, y = torch.nonzero(self.joint > 0, as_tuple=True)
        return x, y, self.joint[x, y]


def toy_data(num_examples: int | None = None, seed: int = 0) -> ToyData:
    r"""The toy's data: the exact distribution, or ``num_examples`` draws from it.

    :param int num_examples: :math:`N` (the paper uses 50); ``None`` for the exact distribution.
    :param int seed: seeds the draws (ignored for the exact distribution).
    :returns: :class:`ToyData`; its ``mutual_information`` is the exact :math:`I(x; z) = 0.5`.

    Example::

        >>> exact, finite = toy_data(), toy_data(50, seed=0)
        >>> round(exact.mutual_information, 6), finite.num_examples, float(finite.joint.sum())
        (0.5, 50, 1.0)
    """
    joint = toy_joint()
    information = _mutual_information(joint)
    if num_examples is None:
        return ToyData(joint, None, information)
    check_positive_integer("num_examples", num_examples)
    generator = torch.Generator().manual_seed(seed)
    cells = torch.multinomial(joint.reshape(-1), num_examples, True, generator=generator)
    examples = torch.stack([cells // joint.shape[1], cells % joint.shape[1]], dim=-1)
    counts = torch.bincount(cells, minlength=joint.numel()).to(torch.float64)
    return ToyData((counts / num_examples).reshape(joint.shape), examples, information)


# The two worlds -----------------------------------------------------------------------------------


class CommonNoiseLogNormal(dist.LogNormal):
    r"""A log-normal whose reparameterized draw reuses a given standard-normal ``noise``.

    ``rsample()`` returns :math:`\exp(\text{loc} + \text{scale} \cdot \text{noise})`; densities and
    KL divergences are those of the log-normal. Evaluating a program with the same ``noise`` at
    every call turns its Monte Carlo average over parameters into a deterministic function of the
    parameters (common random numbers), which finite differences and L-BFGS need.
    """

    def __init__(self, loc: Tensor, scale: Tensor, noise: Tensor):
        loc, scale, noise = torch.broadcast_tensors(loc, scale, noise)
        super().__init__(loc, scale)
        self.noise = noise

    def expand(self, batch_shape, _instance=None) -> CommonNoiseLogNormal:
        shape = torch.Size(batch_shape)
        return CommonNoiseLogNormal(
            self.loc.expand(shape), self.scale.expand(shape), self.noise.expand(shape)
        )

    def rsample(self, sample_shape=()) -> Tensor:
        if torch.Size(sample_shape) != torch.Size():
            raise ValueError("CommonNoiseLogNormal draws exactly its own noise; no sample_shape")
        return torch.exp(self.loc + self.scale * self.noise)


class CategoricalWorlds(PyroModule):
    r"""Worlds Q (:meth:`model`) and P (:meth:`guide`) for categorical :math:`z`, :math:`x`, :math:`y`.

    Both programs take the data as weighted cells ``(x, y, probability)`` (see
    :meth:`ToyData.cells`) and the number of examples :math:`N`; each cell's sites are scaled by
    :math:`N p(x, y)`, so the derived terms are the paper's sums over :math:`N` examples drawn from
    that law. The encoder's parameters :math:`\theta` (site ``theta``) are averaged over
    :math:`P` draws (plate ``parameter_draws``): fresh ones, or the fixed standard-normal
    ``parameter_noise`` ``[P, K]`` of :class:`CommonNoiseLogNormal`. A subclass without stochastic
    parameters returns ``None`` from :meth:`parameter_prior` and has no ``theta`` site.

    Subclasses define :meth:`parameter_prior`, :meth:`parameter_posterior`,
    :meth:`encoder_logits` and the world-Q tables :meth:`marginal_logits`,
    :meth:`decoder_logits`, :meth:`classifier_logits`; or, for the reconstruction-free world Q of
    Appendix A, :meth:`predictive_logits` instead of the marginal and the decoder.
    """

    num_parameter_draws: int = 1

    # Hooks ----------------------------------------------------------------------------------

    def parameter_prior(self) -> dist.Distribution | None:
        r""":math:`q(\theta)` with event shape ``[K]``, or ``None``."""
        return None

    def parameter_posterior(self, noise: Tensor | None) -> dist.Distribution | None:
        r""":math:`p(\theta \mid \text{data})`; with ``noise`` ``[P, K]``, its common-noise form."""
        return None

    def encoder_logits(self, x: Tensor, theta: Tensor | None) -> Tensor:
        r"""Unnormalized :math:`\log p(z \mid x, \theta)`, ``[..., M, K]`` for ``x`` ``[M]``."""
        raise NotImplementedError

    def marginal_logits(self) -> Tensor:
        r"""Unnormalized :math:`\log q(z)`, ``[K]``."""
        raise NotImplementedError

    def decoder_logits(self) -> Tensor:
        r"""Unnormalized :math:`\log q(x \mid z)`, ``[K, X]``."""
        raise NotImplementedError

    def classifier_logits(self) -> Tensor:
        r"""Unnormalized :math:`\log q(y \mid z)`, ``[K, Y]``."""
        raise NotImplementedError

    def predictive_logits(self, x: Tensor) -> Tensor | None:
        r"""Unnormalized :math:`\log q(z \mid x)`, ``[M, K]`` for ``x`` ``[M]``, of the
        reconstruction-free world Q (Appendix A); ``None`` (the default) for the generative one."""
        return None

    @property
    def num_bins(self) -> int:
        """The number of values of :math:`x`."""
        return self.decoder_logits().shape[-1]

    # The programs ---------------------------------------------------------------------------

    def _draws(self, parameter_noise: Tensor | None) -> int:
        return self.num_parameter_draws if parameter_noise is None else parameter_noise.shape[0]

    @contextmanager
    def _data_plate(self, x: Tensor, probability: Tensor, num_examples: int) -> Iterator[None]:
        """The cells' plate, each cell's sites scaled by :math:`N p(x, y)`."""
        weight = num_examples * probability.to(self.classifier_logits().dtype)
        with pyro.plate("data", x.shape[0], dim=-1), poutine.scale(scale=weight):
            yield

    @pyro_method
    def model(
        self,
        x: Tensor,
        y: Tensor,
        probability: Tensor,
        num_examples: int,
        parameter_noise: Tensor | None = None,
    ) -> None:
        """World Q: :math:`q(\\theta) \\prod_i q(z_i) q(x_i \\mid z_i) q(y_i \\mid z_i)`, or
        :math:`q(\\theta) \\prod_i q(z_i \\mid x_i) q(y_i \\mid z_i)` (Appendix A)."""
        draws = self._draws(parameter_noise)
        with pyro.plate("parameter_draws", draws, dim=-2), poutine.scale(scale=1.0 / draws):
            prior = self.parameter_prior()
            if prior is not None:
                pyro.sample("theta", prior.expand([draws, 1]))
            with self._data_plate(x, probability, num_examples):
                predictive = self.predictive_logits(x)
                if predictive is None:
                    z = pyro.sample("z", dist.Categorical(logits=self.marginal_logits()))
                    pyro.sample("x", dist.Categorical(logits=self.decoder_logits()[z]), obs=x)
                else:  # Appendix A: no decoder, the z term is the volume V
                    z = pyro.sample("z", dist.Categorical(logits=predictive))
                pyro.sample("y", dist.Categorical(logits=self.classifier_logits()[z]), obs=y)

    @pyro_method
    def guide(
        self,
        x: Tensor,
        y: Tensor,
        probability: Tensor,
        num_examples: int,
        parameter_noise: Tensor | None = None,
    ) -> None:
        """World P: :math:`p(\\theta \\mid \\text{data}) \\prod_i p(z_i \\mid x_i, \\theta)`."""
        draws = self._draws(parameter_noise)
        with pyro.plate("parameter_draws", draws, dim=-2), poutine.scale(scale=1.0 / draws):
            posterior = self.parameter_posterior(parameter_noise)
            theta = None
            if posterior is not None:
                if parameter_noise is None:
                    posterior = posterior.expand([draws, 1])
                theta = pyro.sample("theta", posterior)
            with self._data_plate(x, probability, num_examples):
                pyro.sample("z", dist.Categorical(logits=self.encoder_logits(x, theta)))

    # Tables for evaluation and figures ------------------------------------------------------

    def encoder_draws(self, parameter_noise: Tensor | None = None) -> Tensor:
        r""":math:`p(z \mid x, \theta_p)` for every bin at each parameter draw, ``[P, X, K]``.

        ``P`` is the number of rows of ``parameter_noise``, one fresh draw without it, and 1 for
        a program without parameters :math:`\theta`.
        """
        theta = None
        posterior = self.parameter_posterior(parameter_noise)
        if posterior is not None:
            theta = posterior.rsample()  # one fresh draw, or one per row of the noise
            theta = theta.reshape(-1, 1, theta.shape[-1])
        encoder = self.encoder_logits(torch.arange(self.num_bins), theta).softmax(-1)
        return encoder.reshape(-1, self.num_bins, encoder.shape[-1])

    def tables(self, parameter_noise: Tensor | None = None) -> dict[str, Tensor]:
        r"""The distributions as probability tables, the encoder averaged over parameter draws.

        :returns: ``encoder`` :math:`\langle p(z \mid x, \theta)\rangle_\theta` ``[X, K]``,
            ``marginal`` ``[K]``, ``decoder`` ``[K, X]``, ``classifier`` ``[K, Y]``; for the
            reconstruction-free world Q, ``predictive`` ``[X, K]`` instead of the marginal and
            the decoder.
        """
        tables = {"encoder": self.encoder_draws(parameter_noise).mean(0)}
        predictive = self.predictive_logits(torch.arange(self.num_bins))
        if predictive is None:
            tables["marginal"] = self.marginal_logits().softmax(-1)
            tables["decoder"] = self.decoder_logits().softmax(-1)
        else:
            tables["predictive"] = predictive.softmax(-1)
        tables["classifier"] = self.classifier_logits().softmax(-1)
        return tables


def _positions(count: int, dtype: torch.dtype) -> Tensor:
    """``count`` equally spaced positions on :math:`[-1, 1]`."""
    return torch.linspace(-1.0, 1.0, count, dtype=dtype)


class ToyWorlds(CategoricalWorlds):
    r"""The toy model of Appendix B: 184 parameters (see the module docs for the reading).

    :param int num_latents: :math:`K` (30).
    :param float prior_loc: :math:`m_q` of :math:`q(\theta_k) = \mathrm{LogNormal}(m_q, s_q^2)`.
    :param float prior_scale: :math:`s_q > 0`.
    :param float initial_log_alpha: :math:`\log \alpha_k` at the start; the default keeps the
        weight noise negligible (sd 0.7 %) until a positive :math:`\sigma` asks for more, as the
        paper prescribes.
    :param int num_parameter_draws: :math:`P`, fresh parameter draws per evaluation.
    :param int seed: seeds the initialization (an explicit generator).
    :param torch.dtype dtype: float32 or float64.
    :param bool reconstruction_free: world Q of Appendix A, :math:`q(z \mid x)` of the encoder's
        form, :math:`q(z = k \mid x = j) \propto e^{-(w^p_k u_j - b^p_k)^2}` (60 parameters), in
        place of the decoder and the marginal (90): 154 parameters.

    Example: the derived bound's terms are :math:`-S, -R, -D, -C`::

        >>> from thermossl.objectives import derive_bound
        >>> worlds, data = ToyWorlds(seed=0), toy_data(50)
        >>> bound = derive_bound(worlds.model, worlds.guide, *data.cells(), 50)
        >>> list(bound.terms)
        ['theta', 'z', 'x', 'y']

    Reconstruction-free, they are :math:`-S, -V, -C`::

        >>> free = ToyWorlds(seed=0, reconstruction_free=True)
        >>> list(derive_bound(free.model, free.guide, *data.cells(), 50).terms)
        ['theta', 'z', 'y']
    """

    def __init__(
        self,
        num_latents: int = 30,
        prior_loc: float = math.log(3.0),
        prior_scale: float = 1.0,
        initial_log_alpha: float = -10.0,
        num_parameter_draws: int = 1,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        reconstruction_free: bool = False,
    ):
        super().__init__()
        check_positive_integer("num_latents", num_latents)
        check_positive("prior_scale", prior_scale)
        check_positive_integer("num_parameter_draws", num_parameter_draws)
        self.num_parameter_draws = num_parameter_draws
        self.prior_loc, self.prior_scale = float(prior_loc), float(prior_scale)
        generator = torch.Generator().manual_seed(seed)

        def uniform(low: float, high: float, *shape: int) -> nn.Parameter:
            values = low + (high - low) * torch.rand(*shape, generator=generator, dtype=dtype)
            return nn.Parameter(values)

        k = num_latents
        self.encoder_log_weight = uniform(math.log(2.0), math.log(4.0), k)
        self.encoder_bias = uniform(-3.0, 3.0, k)
        self.encoder_log_alpha = nn.Parameter(torch.full((k,), initial_log_alpha, dtype=dtype))
        self.reconstruction_free = bool(reconstruction_free)
        if self.reconstruction_free:
            self.predictive_weight = uniform(2.0, 4.0, k)
            self.predictive_bias = uniform(-3.0, 3.0, k)
        else:
            self.decoder_weight = uniform(2.0, 4.0, k)
            self.decoder_bias = uniform(-3.0, 3.0, k)
        self.classifier_weight = uniform(-1.0, 1.0, 2)
        self.classifier_bias = uniform(-1.0, 1.0, 2)
        if not self.reconstruction_free:
            self.marginal = nn.Parameter(torch.zeros(k, dtype=dtype))
        self.register_buffer("bin_positions", _positions(TOY_NUM_BINS, dtype))
        self.register_buffer("latent_positions", _positions(k, dtype))

    def parameter_prior(self) -> dist.Distribution:
        loc = self.encoder_log_weight.new_full(self.encoder_log_weight.shape, self.prior_loc)
        return dist.LogNormal(loc, self.prior_scale).to_event(1)

    def parameter_posterior(self, noise: Tensor | None) -> dist.Distribution:
        alpha = self.encoder_log_alpha.exp()
        loc, scale = self.encoder_log_weight - alpha / 2, alpha.sqrt()
        if noise is None:
            return dist.LogNormal(loc, scale).to_event(1)
        return CommonNoiseLogNormal(loc, scale, noise.unsqueeze(-2)).to_event(1)

    def encoder_logits(self, x: Tensor, theta: Tensor | None) -> Tensor:
        u = self.bin_positions[x].unsqueeze(-1)
        return -((theta * u - self.encoder_bias) ** 2)

    def marginal_logits(self) -> Tensor:
        self._generative("q(z)")
        return self.marginal

    def decoder_logits(self) -> Tensor:
        self._generative("q(x | z)")
        u = self.bin_positions
        return -((self.decoder_weight[:, None] * u - self.decoder_bias[:, None]) ** 2)

    def predictive_logits(self, x: Tensor) -> Tensor | None:
        if not self.reconstruction_free:
            return None
        u = self.bin_positions[x].unsqueeze(-1)
        return -((self.predictive_weight * u - self.predictive_bias) ** 2)

    @property
    def num_bins(self) -> int:
        return self.bin_positions.shape[0]

    def _generative(self, table: str) -> None:
        if self.reconstruction_free:
            raise ValueError(f"the reconstruction-free world Q (Appendix A) has no {table}")

    def classifier_logits(self) -> Tensor:
        s = self.latent_positions[:, None]
        return -((self.classifier_weight * s - self.classifier_bias) ** 2)


class HandCraftedToy(CategoricalWorlds):
    r"""The optimal hand-crafted model of Figure 3: the true latent as the representation.

    :math:`K = 2`, :math:`p(z \mid x)` the true posterior of the process, and every world-Q
    distribution the matching marginal or conditional of world P: :math:`q(z) = p(z)`,
    :math:`q(x \mid z) = p(x \mid z)`, :math:`q(y \mid z) = \sum_x p(y \mid x) p(x \mid z)`. Its
    functionals are :math:`R = I(x; z) = 0.5`, :math:`D = H(X \mid Z)`, :math:`C = H(Y \mid Z)` and
    :math:`S = 0` (nothing is learned from the data).

    :param torch.Tensor joint: ``[X, 2]`` table of the process's :math:`p(x, z)` (default: the toy's).
    """

    def __init__(self, joint: Tensor | None = None):
        super().__init__()
        joint = toy_joint() if joint is None else joint.to(torch.float64)
        p_x = joint.sum(-1)
        encoder = joint / p_x[:, None]  # p(z | x), [X, 2]
        induced = p_x[:, None] * encoder  # p(x, z) of world P, [X, 2]
        marginal = induced.sum(0)
        decoder = (induced / marginal).T  # p(x | z), [2, X]
        # y = z_true: p(y, z) = sum_x p(x) p(y | x) p(z | x), with p(y | x) = encoder
        label_latent = torch.einsum("x,xy,xz->zy", p_x, encoder, encoder)
        self.register_buffer("encoder_table", encoder.log())
        self.register_buffer("marginal_table", marginal.log())
        self.register_buffer("decoder_table", decoder.log())
        self.register_buffer("classifier_table", (label_latent / marginal[:, None]).log())

    def encoder_logits(self, x: Tensor, theta: Tensor | None) -> Tensor:
        return self.encoder_table[x]

    def marginal_logits(self) -> Tensor:
        return self.marginal_table

    def decoder_logits(self) -> Tensor:
        return self.decoder_table

    def classifier_logits(self) -> Tensor:
        return self.classifier_table
