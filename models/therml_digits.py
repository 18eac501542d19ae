r"""TherML's two worlds with neural networks and a Gaussian latent, on scikit-learn's digits (paper 003).

The pair of :mod:`thermossl.models.therml`, scaled up from the toy's tables to networks. For an
8×8 image :math:`x \in \{0, \dots, 16\}^{64}` (raw pixel counts) with label :math:`y \in \{0,
\dots, 9\}` and a latent :math:`z \in \mathbb{R}^L`:

* **world P** (the guide, eq. 2): :math:`p(z \mid x, \theta) = N\big(\mu_\theta(h(x)),
  \operatorname{diag} s_\theta(h(x))^2\big)`, an encoder whose trunk :math:`h` is a one-layer
  tanh network and whose output layer (weights and biases, :math:`\theta`) gives the location and,
  through a softplus, the scale;
* **world Q** (the model, eq. 3): :math:`q(z) = \sum_{k=1}^{10} \pi_k N(z; m_k,
  \operatorname{diag} v_k^2)`, a learnable mixture; :math:`q(x \mid z) = \prod_{j=1}^{64}
  \mathrm{Binomial}(x_j; 16, \operatorname{sigmoid} g_j(z))`, a tanh decoder network;
  :math:`q(y \mid z) = \operatorname{softmax}(W z + b)_y`, a linear classifier.

Read as a (model, guide) pair, the derived bound
(:func:`~thermossl.objectives.derive_bound`) has one term per site, the functionals of §1.1 summed
over the :math:`N` examples:

.. math::

    \mathcal{L}_z = -R = -\textstyle\sum_i \big\langle \log \frac{p(z_i \mid x_i, \theta)}{q(z_i)}
    \big\rangle_P, \qquad
    \mathcal{L}_x = -D = \textstyle\sum_i \langle \log q(x_i \mid z_i) \rangle_P, \qquad
    \mathcal{L}_y = -C = \textstyle\sum_i \langle \log q(y_i \mid z_i) \rangle_P .

No KL between a Gaussian and a mixture is registered, so :math:`R` is the single-sample estimate
at the guide's reparameterized draw :math:`z_i = \mu_i + s_i \varepsilon_i`; giving the standard
normal ``latent_noise`` :math:`\varepsilon` makes both programs deterministic functions of their
parameters (:class:`CommonNoiseNormal`). Minibatches subsample the plate ``data``, so each term
carries :math:`N/B` and estimates the sum over all :math:`N` examples.

**Which parameters are stochastic.** :math:`\theta` is the encoder's *output layer*
(``2L × hidden + 2L`` numbers, :attr:`DigitsWorlds.head_size`), the block whose law
:math:`p(\theta \mid \{x, y\})` TherML's :math:`S` measures; the encoder's trunk and all of world
Q are point estimates, the same in both worlds, and add nothing to :math:`S` (the toy of
Appendix B likewise makes only its encoder weights stochastic). ``theta`` is therefore not a
sample site: the programs take it as an argument (the module's own output layer when ``None``),
and :class:`ChainFunctionals` evaluates them at one :math:`\theta` per chain in one vectorized
call. Its prior :math:`q(\theta)` lives with the sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, pyro_method
from thermossl.models.datasets import load_dataset
from thermossl.objectives.bound import DerivedELBO
from thermossl.objectives.therml import Functionals, WorldSites
from thermossl.objectives.traced import ParameterPassthrough
from torch import Tensor, nn
from torch.func import functional_call

from thermossl._tracing import record
from thermossl._validation import check_positive_integer, check_whole_numbers

__all__ = [
    "DIGITS_SITES",
    "MINIMUM_SCALE",
    "NUM_CLASSES",
    "NUM_PIXELS",
    "PIXEL_LEVELS",
    "ChainFunctionals",
    "CommonNoiseNormal",
    "DigitsData",
    "DigitsWorlds",
    "digits_data",
]

#: Pixels per image (8×8).
NUM_PIXELS = 64
#: The largest pixel count; pixels take the values 0, 1, ..., 16.
PIXEL_LEVELS = 16
#: Digit classes.
NUM_CLASSES = 10
#: A floor on the encoder's scale :math:`s`, so that no draw of :math:`\theta` (a prior draw on the
#: first rung of a ladder, say) makes :math:`\log p(z \mid x, \theta)` infinite.
MINIMUM_SCALE = 1e-3

#: The sites of :class:`DigitsWorlds`: ``z``, ``x``, ``y``; :math:`\theta` is no sample site.
DIGITS_SITES = WorldSites(parameters=None)

# One plate at dimension -1: giving the nesting skips the guessing run, which would otherwise run
# the programs once more (and, without given noise, draw z at random inside a vmap).
_DERIVATION = DerivedELBO(max_plate_nesting=1)


class DigitsData(NamedTuple):
    """Digits as raw counts: pixels ``[N, 64]`` (floats in 0..16) and labels ``[N]`` (int64)."""

    train_pixels: Tensor
    train_labels: Tensor
    test_pixels: Tensor
    test_labels: Tensor


def digits_data(
    seed: int = 0, test_fraction: float = 0.25, dtype: torch.dtype = torch.float32
) -> DigitsData:
    r"""scikit-learn's bundled digits (1,797 images) as pixel counts, in a stratified split.

    The split is :func:`~thermossl.models.datasets.load_dataset`'s; the pixels are its
    :math:`[0, 1]` values times 16, i.e. the original counts.

    Example::

        >>> data = digits_data()
        >>> tuple(data.train_pixels.shape), tuple(data.test_pixels.shape)
        ((1347, 64), (450, 64))
        >>> float(data.train_pixels.max()), bool((data.train_pixels == data.train_pixels.round()).all())
        (16.0, True)
    """
    split = load_dataset("digits", seed=seed, test_fraction=test_fraction)
    train, test = (
        (inputs * PIXEL_LEVELS).round().to(dtype)
        for inputs in (split.train_inputs, split.test_inputs)
    )
    return DigitsData(train, split.train_labels, test, split.test_labels)


class CommonNoiseNormal(dist.Normal):
    r"""A normal law whose reparameterized draw reuses a given standard-normal ``noise``.

    ``rsample()`` returns :math:`\text{loc} + \text{scale} \cdot \text{noise}`; the density is the
    normal one. Running a program with the same noise makes its Monte Carlo terms deterministic
    functions of its parameters (common random numbers), and lets a caller draw the noise from its
    own :class:`torch.Generator`, outside any :func:`torch.vmap` (which forbids randomness).

    Example::

        >>> law = CommonNoiseNormal(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([0.5]))
        >>> law.rsample()  # loc + scale * noise, at every call
        tensor([2.])
        >>> torch.equal(law.log_prob(law.rsample()), dist.Normal(1.0, 2.0).log_prob(law.rsample()))
        True
    """

    def __init__(self, loc: Tensor, scale: Tensor, noise: Tensor):
        loc, scale, noise = torch.broadcast_tensors(loc, scale, noise)
        super().__init__(loc, scale)
        self.noise = noise

    def expand(self, batch_shape, _instance=None) -> CommonNoiseNormal:
        shape = torch.Size(batch_shape)
        return CommonNoiseNormal(
            self.loc.expand(shape), self.scale.expand(shape), self.noise.expand(shape)
        )

    def rsample(self, sample_shape=()) -> Tensor:
        if torch.Size(sample_shape) != torch.Size():
            raise ValueError("CommonNoiseNormal draws exactly its own noise; no sample_shape")
        return self.loc + self.scale * self.noise


class DigitsWorlds(PyroModule):
    r"""World Q (:meth:`model`) and world P (:meth:`guide`) for digits; see the module docs.

    :param int latent_dim: :math:`L`.
    :param int hidden: width of the encoder's trunk and of the decoder's hidden layer.
    :param int num_components: components of the mixture :math:`q(z)`.
    :param int seed: seeds the initialization (an explicit generator): PyTorch's default uniform
        layers, mixture locations :math:`N(0, 1)`, unit mixture scales, uniform weights.
    :param torch.dtype dtype: float32 or float64.

    Both programs take ``(pixels, labels, indices, latent_noise, theta)``: the whole data set
    (``pixels [N, 64]`` counts, ``labels [N]``), the minibatch ``indices [B]`` (``None``: all
    :math:`N`), the standard normal ``latent_noise [B, L]`` of the encoder's draw (``None``: fresh
    noise) and the output layer :math:`\theta` ``[P]`` (``None``: the module's own).

    Example: the derived bound's terms are :math:`-R, -D, -C`, each a sum over the :math:`N`
    examples (here estimated from a minibatch of 32)::

        >>> from thermossl.objectives import derive_bound
        >>> data, worlds = digits_data(), DigitsWorlds(latent_dim=4, hidden=32)
        >>> indices = torch.arange(32)
        >>> noise = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
        >>> bound = derive_bound(worlds.model, worlds.guide, data.train_pixels, data.train_labels,
        ...                      indices, noise)
        >>> list(bound.terms), worlds.head_size
        (['z', 'x', 'y'], 264)
    """

    #: The derivation's plate nesting (read by :class:`~thermossl.objectives.TracedBound`).
    max_plate_nesting = 1

    def __init__(
        self,
        latent_dim: int = 6,
        hidden: int = 48,
        num_components: int = 10,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        for name, value in (
            ("latent_dim", latent_dim),
            ("hidden", hidden),
            ("num_components", num_components),
        ):
            check_positive_integer(name, value)
        self.latent_dim = latent_dim
        generator = torch.Generator().manual_seed(seed)
        self.encoder_trunk = nn.Sequential(nn.Linear(NUM_PIXELS, hidden), nn.Tanh())
        self.encoder_head = nn.Linear(hidden, 2 * latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, NUM_PIXELS)
        )
        self.classifier = nn.Linear(latent_dim, NUM_CLASSES)
        for layer in (*self.encoder_trunk, self.encoder_head, *self.decoder, self.classifier):
            if isinstance(layer, nn.Linear):
                _default_initialization(layer, generator)
        self.mixture_logits = nn.Parameter(torch.zeros(num_components))
        self.mixture_locs = nn.Parameter(
            torch.randn(num_components, latent_dim, generator=generator)
        )
        # softplus(0.5413) = 1: unit scales at the start
        self.mixture_scales_raw = nn.Parameter(torch.full((num_components, latent_dim), 0.5413))
        self.to(dtype)

    # theta, the stochastic block -----------------------------------------------------------------

    @property
    def head_size(self) -> int:
        """:math:`P`, the number of entries of :math:`\\theta` (the encoder's output layer)."""
        return self.encoder_head.weight.numel() + self.encoder_head.bias.numel()

    def head_vector(self) -> Tensor:
        """The module's own :math:`\\theta` as a flat ``[P]`` vector (weights row-major, then biases)."""
        return torch.cat([self.encoder_head.weight.flatten(), self.encoder_head.bias]).detach()

    def _unflatten(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        if theta.shape[-1:] != (self.head_size,):
            raise ValueError(
                f"theta must end in the {self.head_size} entries of the encoder's output layer, "
                f"got shape {tuple(theta.shape)}"
            )
        shape = self.encoder_head.weight.shape
        split = shape.numel()
        return theta[..., :split].unflatten(-1, tuple(shape)), theta[..., split:]

    # The networks -------------------------------------------------------------------------------

    def features(self, pixels: Tensor) -> Tensor:
        r""":math:`h(x / 16)`, the encoder trunk's output ``[..., hidden]`` (the input of :math:`\theta`)."""
        return self.encoder_trunk(pixels / PIXEL_LEVELS)

    def encoder(self, pixels: Tensor, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Location and scale of :math:`p(z \mid x, \theta)`, each ``[..., L]``.

        :math:`(\mu, \rho) = W_\theta h(x / 16) + b_\theta`,
        :math:`s = \operatorname{softplus}(\rho) + 10^{-3}` (:data:`MINIMUM_SCALE`).
        """
        features = self.features(pixels)
        if theta is None:
            output = self.encoder_head(features)
        else:
            weight, bias = self._unflatten(theta)
            output = features @ weight.transpose(-1, -2) + bias
        loc, raw = output.split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw) + MINIMUM_SCALE

    def marginal(self) -> dist.MixtureSameFamily:
        r""":math:`q(z)`, the mixture of diagonal Gaussians (event shape ``[L]``)."""
        components = dist.Normal(self.mixture_locs, F.softplus(self.mixture_scales_raw))
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.mixture_logits), components.to_event(1)
        )

    def decoder_logits(self, z: Tensor) -> Tensor:
        r"""Logits :math:`g(z)` of the pixels' success probabilities in :math:`q(x \mid z)`, ``[..., 64]``."""
        return self.decoder(z)

    def classifier_logits(self, z: Tensor) -> Tensor:
        r"""Unnormalized :math:`\log q(y \mid z)`, ``[..., 10]``."""
        return self.classifier(z)

    # The programs -------------------------------------------------------------------------------

    def check_inputs(
        self,
        pixels: Tensor,
        labels: Tensor,
        indices: Tensor | None = None,
        latent_noise: Tensor | None = None,
        theta: Tensor | None = None,
    ) -> None:
        """Raise a :class:`ValueError` naming the first argument that is not as documented."""
        if not isinstance(pixels, Tensor) or not pixels.is_floating_point():
            raise TypeError("pixels must be a floating-point tensor of counts 0..16")
        if pixels.dim() != 2 or pixels.shape[1] != NUM_PIXELS:
            raise ValueError(f"pixels must have shape (N, {NUM_PIXELS}), got {tuple(pixels.shape)}")
        check_whole_numbers("pixels", pixels, 0, PIXEL_LEVELS)
        if not isinstance(labels, Tensor) or labels.dtype != torch.long or labels.dim() != 1:
            raise ValueError("labels must be a 1-d int64 tensor of classes 0..9")
        if labels.shape[0] != pixels.shape[0]:
            raise ValueError(
                f"pixels and labels must hold the same N examples, got {pixels.shape[0]} and "
                f"{labels.shape[0]}"
            )
        check_whole_numbers("labels", labels, 0, NUM_CLASSES - 1)
        size = pixels.shape[0]
        if indices is not None:
            if indices.dtype != torch.long or indices.dim() != 1 or indices.numel() == 0:
                raise ValueError("indices must be a non-empty 1-d int64 tensor")
            check_whole_numbers("indices", indices, 0, size - 1)
            size = indices.shape[0]
        if latent_noise is not None and tuple(latent_noise.shape) != (size, self.latent_dim):
            raise ValueError(
                f"latent_noise must have shape ({size}, {self.latent_dim}) (one row per example "
                f"of the batch), got {tuple(latent_noise.shape)}"
            )
        if theta is not None:
            self._unflatten(theta)

    @pyro_method
    def model(
        self,
        pixels: Tensor,
        labels: Tensor,
        indices: Tensor | None = None,
        latent_noise: Tensor | None = None,
        theta: Tensor | None = None,
    ) -> None:
        r"""World Q: :math:`\prod_i q(z_i)\, q(x_i \mid z_i)\, q(y_i \mid z_i)` (eq. 3)."""
        self.check_inputs(pixels, labels, indices, latent_noise, theta)
        with pyro.plate("data", pixels.shape[0], subsample=indices, dim=-1) as batch:
            z = pyro.sample("z", self.marginal())
            observed = dist.Binomial(PIXEL_LEVELS, logits=self.decoder_logits(z))
            pyro.sample("x", observed.to_event(1), obs=pixels[batch])
            pyro.sample("y", dist.Categorical(logits=self.classifier_logits(z)), obs=labels[batch])

    @pyro_method
    def guide(
        self,
        pixels: Tensor,
        labels: Tensor,
        indices: Tensor | None = None,
        latent_noise: Tensor | None = None,
        theta: Tensor | None = None,
    ) -> None:
        r"""World P: :math:`\prod_i p(z_i \mid x_i, \theta)` (eq. 2), at the given :math:`\theta`."""
        self.check_inputs(pixels, labels, indices, latent_noise, theta)
        with pyro.plate("data", pixels.shape[0], subsample=indices, dim=-1) as batch:
            loc, scale = self.encoder(pixels[batch], theta)
            if latent_noise is None:
                encoder = dist.Normal(loc, scale)
            else:
                encoder = CommonNoiseNormal(loc, scale, latent_noise)
            pyro.sample("z", encoder.to_event(1))


class ChainFunctionals:
    r""":math:`R, D, C` per example at one :math:`\theta` per chain, in one vectorized call.

    The derivation of :class:`DigitsWorlds`' pair is recorded once per input signature (shapes,
    dtypes) as a tensor program, the module's parameters and buffers being inputs of the record
    (as in :class:`~thermossl.objectives.TracedBound`); the record is then replayed under
    :func:`torch.vmap` over the chains: chain :math:`c` sees ``theta[c]`` and
    ``latent_noise[c]``, the point parameters are shared. The result is differentiable with
    respect to ``theta`` and the point parameters alike (the latter's gradient sums over chains).
    Pyro's effect handlers run while recording only, which is also what makes the vectorization
    possible.

    :param DigitsWorlds worlds: the programs (read at every call, so training may update them).

    Example: each chain's values equal a plain derivation at its :math:`\theta`::

        >>> from thermossl.objectives.therml import functionals
        >>> data, worlds = digits_data(), DigitsWorlds(latent_dim=4, hidden=32)
        >>> generator = torch.Generator().manual_seed(0)
        >>> theta = worlds.head_vector() + 0.1 * torch.randn(3, 264, generator=generator)
        >>> noise, indices = torch.randn(3, 16, 4, generator=generator), torch.arange(16)
        >>> arguments = data.train_pixels, data.train_labels, indices
        >>> chains = ChainFunctionals(worlds)(theta, *arguments, noise)
        >>> single = functionals(worlds.model, worlds.guide, *arguments, noise[1], theta[1],
        ...                      num_examples=1347, sites=DIGITS_SITES)
        >>> chains.distortion.shape, bool(torch.allclose(chains.distortion[1], single.distortion))
        (torch.Size([3]), True)
    """

    def __init__(self, worlds: DigitsWorlds):
        self._derivation = _Derivation(worlds)
        self._records: dict[tuple, Callable] = {}

    @property
    def worlds(self) -> DigitsWorlds:
        return self._derivation.worlds

    def __call__(
        self,
        theta: Tensor,
        pixels: Tensor,
        labels: Tensor,
        indices: Tensor,
        latent_noise: Tensor,
        point_parameters: dict[str, Tensor] | None = None,
    ) -> Functionals:
        """The functionals, each ``[C]``, for ``theta`` ``[C, P]`` and ``latent_noise`` ``[C, B, L]``.

        ``point_parameters`` (names as in ``worlds.named_parameters()``) replace the module's own
        point estimates, so the functionals can be read as a pure function of all parameters.

        :raises ValueError: on inputs :meth:`DigitsWorlds.check_inputs` rejects, or when
            ``theta`` and ``latent_noise`` disagree on the number of chains.
        """
        if theta.dim() != 2 or latent_noise.dim() != 3 or theta.shape[0] != latent_noise.shape[0]:
            raise ValueError(
                "theta [C, P] and latent_noise [C, B, L] must have one row per chain, got shapes "
                f"{tuple(theta.shape)} and {tuple(latent_noise.shape)}"
            )
        self.worlds.check_inputs(pixels, labels, indices, latent_noise[0], theta[0])
        parameters = dict(self._derivation.named_parameters())
        if point_parameters is not None:
            for name, value in point_parameters.items():
                key = f"worlds.{name}"
                if key not in parameters:
                    raise ValueError(f"point_parameters names an unknown parameter {name!r}")
                parameters[key] = value
        buffers = dict(self._derivation.named_buffers())
        inputs = (theta[0], latent_noise[0], pixels, labels, indices)
        key = tuple((tuple(value.shape), value.dtype, value.device) for value in inputs)
        replay = self._records.get(key)
        if replay is None:
            replay = self._records[key] = self._record(parameters, buffers, inputs)
        rate, distortion, classification = torch.vmap(
            replay, in_dims=(None, None, 0, 0, None, None, None)
        )(parameters, buffers, theta, latent_noise, pixels, labels, indices)
        size = pixels.shape[0]
        return Functionals(-rate / size, -distortion / size, -classification / size, None)

    def _record(self, parameters: dict, buffers: dict, inputs: tuple) -> Callable:
        def derived_terms(parameters, buffers, theta, latent_noise, pixels, labels, indices):
            return functional_call(
                self._derivation,
                (parameters, buffers),
                (pixels, labels, indices, latent_noise, theta),
            )

        # recorded with gradients on, the graph replays with or without them
        with ParameterPassthrough(), torch.enable_grad():
            return record(
                derived_terms,
                parameters,
                buffers,
                *inputs,
                pre_dispatch=True,
                hint="DigitsWorlds' programs must not branch on tensor values",
            )


class _Derivation(nn.Module):
    """The worlds as a submodule, so :func:`torch.func.functional_call` can swap their state."""

    def __init__(self, worlds: DigitsWorlds):
        super().__init__()
        self.worlds = worlds

    def forward(self, *arguments) -> tuple[Tensor, Tensor, Tensor]:
        """The ``z``, ``x``, ``y`` terms of the derived bound (:math:`-R, -D, -C`, sums)."""
        terms = _DERIVATION.bound(self.worlds.model, self.worlds.guide, *arguments).terms
        return tuple(
            terms[site] for site in (DIGITS_SITES.latent, DIGITS_SITES.data, DIGITS_SITES.label)
        )


def _default_initialization(layer: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default for ``nn.Linear`` (uniform in :math:`\\pm 1/\\sqrt{\\text{fan-in}}`), seeded."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        for parameter in (layer.weight, layer.bias):
            parameter.copy_((2 * torch.rand(parameter.shape, generator=generator) - 1) * bound)
