r"""Energy, heat, work and free energy of the composite system of representations and self-labels.

Salazar (2021), *Nonequilibrium thermodynamics of self-supervised learning* (paper 000). A batch
of :math:`N` data points and :math:`K` self-labels form a composite system whose state
:math:`(i, j)` has the energy :math:`\varepsilon_{ij}(\lambda)` (eq. 1) and an occupation
:math:`q_{ij} \ge 0`, :math:`\sum_{ij} q_{ij} = 1`. With :math:`\langle a, b\rangle = \sum_{ij}
a_{ij} b_{ij}`:

.. math::

    U = \langle q, \varepsilon \rangle \; \text{(eq. 2, 7)}, \qquad
    S[q] = -\textstyle\sum_{ij} q_{ij} \log q_{ij} \; \text{(eq. 6)},

and for a transformation :math:`(q, \lambda) \to (q', \lambda')`

.. math::

    W = \langle q, \varepsilon(\lambda') - \varepsilon(\lambda) \rangle \; \text{(eq. 3)}, \qquad
    Q = \langle q - q', \varepsilon(\lambda') \rangle \; \text{(eq. 4)}, \qquad
    \Delta U = W - Q \; \text{(the first law, exactly)}.

:math:`Q` is the heat the system *gives off*. The free energy is
:math:`F = \sum_i F_i`, :math:`F_i = -\log Z_i`, :math:`Z_i = N \sum_j e^{-\beta\varepsilon_{ij}}`,
and the Gibbs ensemble :math:`q^G_{ij} = e^{-\beta\varepsilon_{ij}} / Z_i` (rows sum to
:math:`1/N`).

.. warning:: **The free-energy term of the irreversible work.** Eq. 12 reads
    :math:`W_{irr} = \beta W - \delta\lambda\, \partial_\lambda F` with :math:`F` summed over all
    :math:`N` points, while :math:`\sum_{ij} q_{ij} = 1`. Taken literally this is not bounded below
    (shifting row :math:`i`'s energies by :math:`c` changes it by :math:`\beta c (r_i - 1)`), and
    it disagrees by a factor :math:`N` on the free-energy term with eq. 25, which writes the same
    quantity as the change of :math:`-\langle q, \log q^G\rangle`. Here each :math:`F_i` is
    weighted by the ensemble's row marginal :math:`r_i = \sum_j q_{ij}` (:math:`1/N` for every
    ensemble of the paper):

    .. math::

        W_{irr} = \beta W - \textstyle\sum_i r_i\, \Delta F_i
                = \Delta\left[-\langle q, \log q^G \rangle\right],

    exact for finite steps, and equal to eq. 15 to first order. This is what makes the demon's
    gradient step (eq. 16) give :math:`W_{irr} \le 0` (eq. 17) and what SwAV-type methods
    minimize: :func:`gibbs_cross_entropy`.

Every function sums over the last two dimensions (samples, labels); leading dimensions are a batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from thermossl._validation import check_tensor

__all__ = [
    "ensemble_entropy",
    "free_energy",
    "gibbs_cross_entropy",
    "gibbs_ensemble",
    "heat",
    "internal_energy",
    "irreversible_work",
    "prototype_energies",
    "swap_heat",
    "uniform_ensemble",
    "work",
]


def _pair(name: str, first: Tensor, other_name: str, other: Tensor) -> None:
    check_tensor(name, first, min_dim=2)
    check_tensor(other_name, other, min_dim=2)
    if first.shape[-2:] != other.shape[-2:]:
        raise ValueError(
            f"{name} and {other_name} must both be [..., N, K] over the same states, got "
            f"{tuple(first.shape)} and {tuple(other.shape)}"
        )


def _beta(beta: float) -> float:
    beta = float(beta)
    if not beta >= 0 or math.isnan(beta):
        raise ValueError(f"beta must be >= 0 (an inverse temperature), got {beta!r}")
    return beta


def prototype_energies(features: Tensor, prototypes: Tensor) -> Tensor:
    r"""Linear-prototype energies :math:`\varepsilon_{ij} = -\sum_k H_{jk} x_{ki}` (eq. 18).

    :param torch.Tensor features: ``[..., N, R]`` representations :math:`x_i = \phi_\lambda(I_i)`.
    :param torch.Tensor prototypes: ``[K, R]`` prototype matrix :math:`H`.
    :returns: ``[..., N, K]`` energies; the negative prototype scores.

    Example::

        >>> prototype_energies(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        tensor([[-2., -0.]])
    """
    check_tensor("features", features, min_dim=2)
    check_tensor("prototypes", prototypes, min_dim=2)
    if features.shape[-1] != prototypes.shape[-1]:
        raise ValueError(
            f"features [..., N, R] and prototypes [K, R] disagree on R: {tuple(features.shape)} "
            f"and {tuple(prototypes.shape)}"
        )
    return -(features @ prototypes.transpose(-1, -2))


def internal_energy(ensemble: Tensor, energies: Tensor) -> Tensor:
    r"""Internal energy :math:`U = \sum_{ij} \varepsilon_{ij} q_{ij}` (eq. 2, 7).

    Example::

        >>> internal_energy(torch.tensor([[0.5, 0.0], [0.0, 0.5]]), torch.tensor([[1.0, 3.0], [2.0, 0.0]]))
        tensor(0.5000)
    """
    _pair("ensemble", ensemble, "energies", energies)
    return (ensemble * energies).sum((-2, -1))


def ensemble_entropy(ensemble: Tensor) -> Tensor:
    r"""Entropy :math:`S[q] = -\sum_{ij} q_{ij}\log q_{ij}` (eq. 6), with :math:`0 \log 0 = 0`.

    Example::

        >>> ensemble_entropy(torch.full((2, 3), 1 / 6, dtype=torch.float64))  # log 6
        tensor(1.7918, dtype=torch.float64)
    """
    check_tensor("ensemble", ensemble, min_dim=2)
    return -torch.special.xlogy(ensemble, ensemble).sum((-2, -1))


def work(ensemble: Tensor, energies_before: Tensor, energies_after: Tensor) -> Tensor:
    r"""Work :math:`W = \sum_{ij} q_{ij}\,(\varepsilon_{ij}(\lambda') - \varepsilon_{ij}(\lambda))`
    (eq. 3), done on the system by a change of the weights with the occupations ``ensemble``.

    Example::

        >>> q = torch.tensor([[0.25, 0.25], [0.5, 0.0]])
        >>> work(q, torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [2.0, 9.0]]))
        tensor(1.2500)
    """
    _pair("ensemble", ensemble, "energies_before", energies_before)
    _pair("energies_before", energies_before, "energies_after", energies_after)
    return (ensemble * (energies_after - energies_before)).sum((-2, -1))


def heat(ensemble_before: Tensor, ensemble_after: Tensor, energies: Tensor) -> Tensor:
    r"""Heat :math:`Q = \sum_{ij} (q_{ij} - q'_{ij})\,\varepsilon_{ij}(\lambda')` (eq. 4, 5).

    The heat the system gives off when its occupations change from ``ensemble_before`` to
    ``ensemble_after`` at the energies ``energies`` (those after the weight change, if any), so
    that :math:`\Delta U = W - Q`.

    Example::

        >>> energies = torch.tensor([[0.0, 1.0]])
        >>> heat(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]]), energies)
        tensor(1.)
    """
    _pair("ensemble_before", ensemble_before, "ensemble_after", ensemble_after)
    _pair("ensemble_before", ensemble_before, "energies", energies)
    return ((ensemble_before - ensemble_after) * energies).sum((-2, -1))


def swap_heat(
    ensemble: Tensor, twin_ensemble: Tensor, energies: Tensor, twin_energies: Tensor
) -> Tensor:
    r"""Heat of swapping the occupations of two twin systems (eq. 14),

    .. math:: Q = \sum_{ij} (q_{ij} - \tilde q_{ij})(\varepsilon_{ij} - \tilde\varepsilon_{ij}),

    the energy the combined system gives off when :math:`q` moves to the states of
    :math:`\tilde\varepsilon` and :math:`\tilde q` to those of :math:`\varepsilon` (eq. 13); no
    weights change, so :math:`Q = -\Delta\langle E\rangle`.

    Example::

        >>> q, q_twin = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> swap_heat(q, q_twin, torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]]))
        tensor(-3.)
    """
    _pair("ensemble", ensemble, "twin_ensemble", twin_ensemble)
    _pair("energies", energies, "twin_energies", twin_energies)
    _pair("ensemble", ensemble, "energies", energies)
    return ((ensemble - twin_ensemble) * (energies - twin_energies)).sum((-2, -1))


def free_energy(energies: Tensor, beta: float, per_sample: bool = False) -> Tensor:
    r"""Free energy :math:`F = -\sum_i \log Z_i`, :math:`Z_i = N\sum_j e^{-\beta\varepsilon_{ij}}`
    (eq. 12), in units of :math:`k_B T` (dimensionless, like :math:`\beta W`).

    :param torch.Tensor energies: ``[..., N, K]``.
    :param float beta: :math:`\beta \ge 0`.
    :param bool per_sample: return the ``[..., N]`` terms :math:`F_i` instead of their sum.

    Example::

        >>> free_energy(torch.zeros(4, 2), beta=1.0, per_sample=True)  # -log(N K)
        tensor([-2.0794, -2.0794, -2.0794, -2.0794])
    """
    check_tensor("energies", energies, min_dim=2)
    beta = _beta(beta)
    num_samples = energies.shape[-2]
    per_point = -(torch.logsumexp(-beta * energies, dim=-1) + math.log(num_samples))
    return per_point if per_sample else per_point.sum(-1)


def gibbs_ensemble(energies: Tensor, beta: float) -> Tensor:
    r"""Gibbs ensemble :math:`q^G_{ij} = e^{-\beta\varepsilon_{ij}} / Z_i` (eq. 25): each sample's
    softmax over the labels, divided by :math:`N` so that the whole ensemble sums to one.

    The limits are the paper's two extreme classes: :math:`\beta = \infty` (``float("inf")``) puts
    each row's mass on its lowest energy, the degenerate ensemble of §IV.B (ties share the mass);
    :math:`\beta = 0` gives the uniform ensemble :math:`1/(NK)` of the adiabatic class (§IV.C).

    Example::

        >>> gibbs_ensemble(torch.tensor([[0.0, 1.0], [3.0, 1.0]]), beta=float("inf"))
        tensor([[0.5000, 0.0000],
                [0.0000, 0.5000]])
    """
    check_tensor("energies", energies, min_dim=2)
    beta = _beta(beta)
    num_samples = energies.shape[-2]
    if math.isinf(beta):
        lowest = energies == energies.amin(-1, keepdim=True)
        return lowest.to(energies.dtype) / (lowest.sum(-1, keepdim=True) * num_samples)
    return torch.softmax(-beta * energies, dim=-1) / num_samples


def uniform_ensemble(energies: Tensor) -> Tensor:
    r"""The maximum-entropy ensemble :math:`q^U_{ij} = 1/(NK)` of the adiabatic class (§IV.C)."""
    check_tensor("energies", energies, min_dim=2)
    num_samples, num_labels = energies.shape[-2:]
    return torch.full_like(energies, 1.0 / (num_samples * num_labels))


def gibbs_cross_entropy(ensemble: Tensor, energies: Tensor, beta: float) -> Tensor:
    r"""The demon's potential :math:`-\langle q, \log q^G\rangle = \beta U + \sum_i r_i \log Z_i`
    (eq. 25), :math:`r_i = \sum_j q_{ij}`.

    For an ensemble with rows :math:`1/N` it is the cross-entropy between the self-labels and the
    network's softmax :math:`p_{ij} = N q^G_{ij}` averaged over the batch, plus :math:`\log N`:
    SwAV's and DeepCluster's loss per pair for their codes :math:`N q`. Its change under a weight
    step with :math:`q` fixed is :func:`irreversible_work`.

    Example::

        >>> energies = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
        >>> q = gibbs_ensemble(energies, beta=2.0)
        >>> bool(torch.isclose(gibbs_cross_entropy(q, energies, 2.0), ensemble_entropy(q)))
        True
    """
    _pair("ensemble", ensemble, "energies", energies)
    beta = _beta(beta)
    if math.isinf(beta):
        raise ValueError("beta must be finite: the Gibbs ensemble of beta = inf has log q = -inf")
    row_marginal = ensemble.sum(-1)
    log_partition = -free_energy(energies, beta, per_sample=True)
    return beta * internal_energy(ensemble, energies) + (row_marginal * log_partition).sum(-1)


def irreversible_work(
    ensemble: Tensor, energies_before: Tensor, energies_after: Tensor, beta: float
) -> Tensor:
    r"""Irreversible work of an adiabatic step (eq. 12, 15, 25), dimensionless:

    .. math::

        W_{irr} = \beta W - \textstyle\sum_i r_i\,(F_i(\lambda') - F_i(\lambda))
                = \Delta_\lambda\left[-\langle q, \log q^G\rangle\right],
        \qquad r_i = \textstyle\sum_j q_{ij}.

    To first order in :math:`\delta\lambda` it is eq. 15. The demon's gradient step
    :math:`\delta\lambda = -\gamma \nabla_\lambda(-\langle q, \log q^G\rangle)` (eq. 16) gives
    :math:`W_{irr} = -\gamma\|\nabla\|^2 + O(\gamma^2) \le 0` (eq. 17). At :math:`\beta = 0` it
    vanishes identically: the adiabatic class extracts plain work :math:`W` instead (eq. 28).

    .. warning:: The free-energy term is weighted by the row marginals :math:`r_i`, not summed
        as eq. 12 prints it; see the module's note.

    :param torch.Tensor ensemble: ``[..., N, K]`` occupations, held fixed.
    :param torch.Tensor energies_before: :math:`\varepsilon(\lambda)`.
    :param torch.Tensor energies_after: :math:`\varepsilon(\lambda')`.
    :param float beta: the inverse temperature of the Gibbs ensemble the demon matches.

    Example::

        >>> q = torch.tensor([[0.5, 0.0], [0.0, 0.5]], dtype=torch.float64)
        >>> before = torch.zeros(2, 2, dtype=torch.float64)
        >>> after = torch.tensor([[-1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
        >>> float(irreversible_work(q, before, after, beta=1.0)) < 0  # the labels became likelier
        True
    """
    _pair("ensemble", ensemble, "energies_before", energies_before)
    _pair("energies_before", energies_before, "energies_after", energies_after)
    beta = _beta(beta)
    if math.isinf(beta):
        raise ValueError("beta must be finite for the irreversible work")
    row_marginal = ensemble.sum(-1)
    free_energy_change = free_energy(energies_after, beta, per_sample=True) - free_energy(
        energies_before, beta, per_sample=True
    )
    return beta * work(ensemble, energies_before, energies_after) - (
        row_marginal * free_energy_change
    ).sum(-1)
