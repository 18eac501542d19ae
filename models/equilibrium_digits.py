r"""The equilibrium surface's functionals on digits as a pure function of all parameters (paper 002).

Gao & Chaudhari's model is TherML's digits pair (:class:`~thermossl.models.therml_digits.DigitsWorlds`)
under other names: the encoder :math:`e_\theta(z \mid x)` is world P's Gaussian encoder, the
marginal :math:`m_\theta(z)` world Q's mixture, the decoder :math:`d_\theta(x \mid z)` its Binomial
pixels and the classifier :math:`c_\theta(y \mid z)` its softmax. The functionals are the derived
bound's terms, per example,

.. math::

    R = \langle \log e(z \mid x) / m(z) \rangle, \qquad
    D = -\langle \log d(x \mid z) \rangle, \qquad
    C = -\langle \log c(y \mid z) \rangle \quad \text{(eq. 1, 4)},

and :math:`J(\lambda, \gamma) = R + \lambda D + \gamma C` (eq. 8). Here every parameter is a
point estimate (:math:`\sigma = 0`, Remark 2). :class:`SurfaceFunctionals` fixes the data and the
encoder's standard normal noise (common random numbers), so :math:`\theta \mapsto (R, D, C)` is a
deterministic, twice-differentiable function of one flat vector: what the quasi-static engines of
:mod:`thermossl.inference.quasi_static` take.
"""

from __future__ import annotations

import torch
from thermossl.models.therml_digits import ChainFunctionals, DigitsWorlds
from torch import Tensor

__all__ = ["SurfaceFunctionals"]

_HEAD = ("encoder_head.weight", "encoder_head.bias")


class SurfaceFunctionals:
    r""":math:`(R, D, C)` per example of ``worlds`` on fixed data and noise, as a function of the
    flat vector of all its parameters.

    :param DigitsWorlds worlds: the model; its parameters give :meth:`initial` and the layout.
    :param torch.Tensor pixels: ``[N, 64]`` counts.
    :param torch.Tensor labels: ``[N]`` classes.
    :param torch.Tensor latent_noise: ``[N, L]`` standard normal draws of the encoder, fixed.

    The layout is the module's parameters in ``named_parameters()`` order, each flattened, with the
    encoder's output layer (TherML's :math:`\theta`) last.

    Example: the values at the module's own parameters are the derived bound's::

        >>> from thermossl.models.therml_digits import digits_data
        >>> data, worlds = digits_data(), DigitsWorlds(latent_dim=2, hidden=8)
        >>> noise = torch.randn(1347, 2, generator=torch.Generator().manual_seed(0))
        >>> surface = SurfaceFunctionals(worlds, data.train_pixels, data.train_labels, noise)
        >>> rate, distortion, classification = surface(surface.initial())
        >>> surface.size, rate.shape
        (1236, torch.Size([]))
    """

    def __init__(self, worlds: DigitsWorlds, pixels: Tensor, labels: Tensor, latent_noise: Tensor):
        worlds.check_inputs(pixels, labels, None, latent_noise)
        self.worlds = worlds
        self.pixels, self.labels = pixels, labels
        self.latent_noise = latent_noise
        self.indices = torch.arange(pixels.shape[0], device=pixels.device)
        named = dict(worlds.named_parameters())
        self.names = [name for name in named if name not in _HEAD] + list(_HEAD)
        self.shapes = [named[name].shape for name in self.names]
        self.sizes = [shape.numel() for shape in self.shapes]
        self._chains = ChainFunctionals(worlds)

    @property
    def size(self) -> int:
        """The number of parameters :math:`P`."""
        return sum(self.sizes)

    def initial(self) -> Tensor:
        """The module's current parameters as one flat vector (a detached copy)."""
        named = dict(self.worlds.named_parameters())
        return torch.cat([named[name].detach().flatten() for name in self.names])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """The flat vector as ``{name: tensor}`` in the module's shapes."""
        if flat.shape != (self.size,):
            raise ValueError(f"flat must have shape ({self.size},), got {tuple(flat.shape)}")
        pieces = flat.split(self.sizes)
        return {
            name: piece.view(shape)
            for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)
        }

    def load(self, flat: Tensor) -> None:
        """Write the flat vector into the module's parameters."""
        with torch.no_grad():
            named = dict(self.worlds.named_parameters())
            for name, value in self.unflatten(flat).items():
                named[name].copy_(value)

    def __call__(self, flat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:math:`(R, D, C)` per example at the parameters ``flat``."""
        parameters = self.unflatten(flat)
        head = torch.cat([parameters.pop(_HEAD[0]).flatten(), parameters.pop(_HEAD[1])])
        values = self._chains(
            head[None],
            self.pixels,
            self.labels,
            self.indices,
            self.latent_noise[None],
            point_parameters=parameters,
        )
        return values.rate[0], values.distortion[0], values.classification[0]
