r"""TherML's functionals :math:`R, C, D, S` and the objective :math:`J` (paper 003, §1–2).

For world P (the guide) and world Q (the model) of :mod:`thermossl.models.therml`, with sums over
the :math:`N` examples:

.. math::

    R &\equiv \textstyle\sum_i \big\langle \log \frac{p(z_i \mid x_i, \theta)}{q(z_i)} \big\rangle_P
        \;\ge\; \sum_i I(Z_i; X_i, \Theta) && \text{(rate)} \\
    C &\equiv -\textstyle\sum_i \langle \log q(y_i \mid z_i) \rangle_P \;\ge\; \sum_i H(Y_i \mid Z_i)
        && \text{(classification error)} \\
    D &\equiv -\textstyle\sum_i \langle \log q(x_i \mid z_i) \rangle_P \;\ge\; \sum_i H(X_i \mid Z_i)
        && \text{(distortion)} \\
    S &\equiv \big\langle \log \tfrac{p(\theta \mid \{x, y\})}{q(\theta)} \big\rangle_P
        \;\ge\; I(\Theta; \{X, Y\}) && \text{(entropy)}

With the reconstruction-free world Q of Appendix A (:math:`q(z \mid x)` in place of
:math:`q(z)\, q(x \mid z)`), the ``z`` site carries the *volume* instead of :math:`R` and there is
no :math:`D`:

.. math::

    V \equiv \textstyle\sum_i \big\langle \log \frac{p(z_i \mid x_i, \theta)}{q(z_i \mid x_i)}
        \big\rangle_P \;\ge\; \sum_i I(Z_i; \Theta \mid X_i) \qquad \text{(volume)},

with equality when :math:`q(z \mid x)` is the parameter-averaged encoder; read it with
:data:`RECONSTRUCTION_FREE_SITES`.

They bound what they cannot reach (eq. 11, 12, 14, 15):

.. math::

    R + D \ge \textstyle\sum_i H(X_i) + I(Z_i; \Theta \mid X_i), \qquad
    R + C + D + S \ge \mathrm{KL}(p \,\|\, Q) + \textstyle\sum_i H(X_i, Y_i) - I(X_i; Y_i; \Phi),

    I(Z_i; \Phi) \le R, \qquad I(\Theta; \Phi) \le S,

and the objective of eq. 17 (with the multiplier :math:`\rho` on :math:`R` of Appendix B) is

.. math::

    J = \rho R + \delta D + \gamma C + \sigma S \;(+\, \nu V \text{ for Appendix A's pair}).

Each functional is **derived**: :func:`functionals` runs
:func:`~thermossl.objectives.derive_bound` on the pair and reads one site's term, so that
:math:`-\mathcal{L}_\theta = S`, :math:`-\mathcal{L}_z = R`, :math:`-\mathcal{L}_x = D`,
:math:`-\mathcal{L}_y = C`; nothing is written in closed form here.

.. warning:: :class:`Functionals` holds values **per example** (each sum divided by :math:`N`,
    :math:`S` included), so that :math:`R = I(x; z)` reads 0.5 nats for the toy's optimal model.
    Every identity above is linear and holds the same way per example; the objective is then
    :math:`J / N`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from thermossl.objectives.bound import Bound, DerivedELBO
from torch import Tensor

__all__ = [
    "DEFAULT_SITES",
    "RECONSTRUCTION_FREE_SITES",
    "Functionals",
    "Multipliers",
    "WorldSites",
    "conditional_information",
    "entropy",
    "functionals",
    "objective",
]


class WorldSites(NamedTuple):
    """The sample-site names that carry each functional (``None``: no site carries it)."""

    parameters: str | None = "theta"
    latent: str | None = "z"
    data: str | None = "x"
    label: str | None = "y"
    volume: str | None = None


#: The site names of :mod:`thermossl.models.therml`'s programs.
DEFAULT_SITES = WorldSites()

#: The sites of the reconstruction-free pair (Appendix A): ``z`` carries :math:`V`, no ``x``.
RECONSTRUCTION_FREE_SITES = WorldSites(latent=None, data=None, volume="z")


class Multipliers(NamedTuple):
    r"""The multipliers of :math:`J = \rho R + \delta D + \gamma C + \sigma S + \nu V`, all :math:`\ge 0`.

    Named as in the paper's captions (Appendix B): ``rho`` on the rate, ``delta`` on the
    distortion, ``gamma`` on the classification error, ``sigma`` (the temperature) on the entropy;
    ``nu`` on Appendix A's volume, which the paper gives no multiplier (0 unless set).

    Example::

        >>> Multipliers(rho=1, delta=1, gamma=0, sigma=0).checked()  # a VAE
        Multipliers(rho=1.0, delta=1.0, gamma=0.0, sigma=0.0, nu=0.0)
    """

    rho: float = 1.0
    delta: float = 0.0
    gamma: float = 0.0
    sigma: float = 0.0
    nu: float = 0.0

    def checked(self) -> Multipliers:
        """These multipliers as floats, after checking each is finite and >= 0.

        :raises ValueError: naming the first negative (or non-finite) multiplier.
        """
        values = Multipliers(*(float(value) for value in self))
        for name, value in values._asdict().items():
            if not (value >= 0 and value < float("inf")):
                raise ValueError(
                    f"the multiplier {name} must be a finite number >= 0, got {value!r}"
                )
        return values


class Functionals(NamedTuple):
    r""":math:`R, D, C, S` (and :math:`V`) per example, in nats; ``None`` where the program has no
    such site."""

    rate: Tensor | None
    distortion: Tensor | None
    classification: Tensor | None
    entropy: Tensor | None
    volume: Tensor | None = None

    @classmethod
    def from_bound(
        cls, bound: Bound, num_examples: int, sites: WorldSites = DEFAULT_SITES
    ) -> Functionals:
        """The functionals carried by a derived bound's site terms (see :func:`functionals`)."""
        per_example = {name: -term / num_examples for name, term in bound.terms.items()}
        return cls(*(None if site is None else per_example.get(site) for site in _owners(sites)))

    def as_floats(self) -> dict[str, float | None]:
        """``{"R", "D", "C", "S"}`` as floats (``None`` where undefined), and ``"V"`` where defined."""
        floats = {
            symbol: None if value is None else float(value.detach())
            for symbol, value in zip("RDCSV", self, strict=True)
        }
        if floats["V"] is None:
            del floats["V"]
        return floats


def _owners(sites: WorldSites) -> tuple[str | None, ...]:
    """The site of each :class:`Functionals` field, in its order (and :class:`Multipliers`')."""
    return (sites.latent, sites.data, sites.label, sites.parameters, sites.volume)


def functionals(
    model: Callable,
    guide: Callable,
    *args,
    num_examples: int,
    sites: WorldSites = DEFAULT_SITES,
    elbo: DerivedELBO | None = None,
    **kwargs,
) -> Functionals:
    r"""The functionals of a (world Q, world P) pair, read off the derived bound's site terms.

    :param callable model: world Q, a Pyro program.
    :param callable guide: world P, sampling every latent site of ``model``.
    :param args: passed to both programs.
    :param int num_examples: :math:`N`, the size the programs' sums run over (their plate scale);
        the functionals are divided by it.
    :param WorldSites sites: which site carries which functional.
    :param DerivedELBO elbo: the derivation's settings (particles, enumeration); its defaults
        otherwise.
    :param kwargs: passed to both programs.
    :returns: :class:`Functionals` (per example), ``None`` for a site neither program has.

    Example: the hand-crafted optimal toy model sits at :math:`R = I(x; z) = 0.5` nats::

        >>> from thermossl.models.therml import HandCraftedToy, toy_data
        >>> worlds = HandCraftedToy()
        >>> values = functionals(worlds.model, worlds.guide, *toy_data().cells(), 1, num_examples=1)
        >>> round(float(values.rate), 6), values.entropy is None
        (0.5, True)
    """
    bound = (elbo or DerivedELBO()).bound(model, guide, *args, **kwargs)
    return Functionals.from_bound(bound, num_examples, sites)


def objective(
    values: Functionals, multipliers: Multipliers, sites: WorldSites = DEFAULT_SITES
) -> Tensor:
    r""":math:`J / N = \rho R + \delta D + \gamma C + \sigma S + \nu V` (per example; eq. 17 and 34).

    A zero multiplier drops its functional, which may then be undefined.

    :raises ValueError: when a positive multiplier meets a functional whose site the program
        lacks, naming the site.

    Example::

        >>> one = torch.tensor(1.0)
        >>> float(objective(Functionals(one, 2 * one, None, None), Multipliers(1, 0.5, 0, 0)))
        2.0
    """
    multipliers = multipliers.checked()
    total = None
    # Functionals and Multipliers list their fields in the same order: R, D, C, S, V
    for value, weight, name, site in zip(
        values, multipliers, Multipliers._fields, _owners(sites), strict=True
    ):
        if weight == 0:
            continue
        if value is None:
            where = "no sample site that carries it" if site is None else f"no sample site {site!r}"
            raise ValueError(
                f"the multiplier {name} is {weight} but the programs have {where}, so its "
                "functional is undefined"
            )
        total = weight * value if total is None else total + weight * value
    if total is None:
        raise ValueError("every multiplier is zero: the objective is empty")
    return total


def entropy(table: Tensor) -> Tensor:
    r"""Shannon entropy :math:`-\sum p \log p` in nats of a probability table (all of its cells)."""
    logs = torch.where(table > 0, table.log(), torch.zeros_like(table))
    return -(table * logs).sum()


def conditional_information(encoder: Tensor, marginal_x: Tensor) -> Tensor:
    r""":math:`I(Z; \Theta \mid X)` of an encoder given at :math:`P` equally likely parameter draws.

    .. math::

        I(Z; \Theta \mid X) = \textstyle\sum_x p(x)\, \big\langle \mathrm{KL}\big(p(z \mid x, \theta)
        \,\big\|\, \langle p(z \mid x, \theta') \rangle_{\theta'}\big) \big\rangle_\theta ,

    the gap between :math:`I(Z; X, \Theta)` and :math:`I(Z; X)` (eq. 10) that tightens eq. 12.

    :param torch.Tensor encoder: ``[P, X, K]`` probabilities :math:`p(z \mid x, \theta_p)`.
    :param torch.Tensor marginal_x: ``[X]`` :math:`p(x)`.
    """
    average = encoder.mean(0, keepdim=True)
    ratio = torch.where(encoder > 0, encoder / average, torch.ones_like(encoder))
    divergences = (encoder * ratio.log()).sum(-1).mean(0)  # [X]
    return (marginal_x * divergences).sum()
