r"""The three processes of an SSL cycle (paper 000, §II.A–C and §III), as records of W, Q, ΔU.

* **Isochoric heating** (§II.A): the occupations relax to an equilibrium ensemble,
  :math:`q \to q^*`, at fixed weights; :math:`W = 0` and the heat is eq. 5.
* **Adiabatic step** (§II.B): the weights move, :math:`\lambda \to \lambda + \delta\lambda`, at
  fixed occupations; :math:`Q = 0`, the work is eq. 3 and the irreversible work eq. 12/25.
* **Swap** (§II.C): two twin systems (two views of the same points) exchange occupations; the
  heat is eq. 14.

Each returns a :class:`ProcessRecord` whose :attr:`~ProcessRecord.energy_change` is measured
directly as :math:`U_{after} - U_{before}`, so the first law :math:`\Delta U = W - Q` is a check on
the numbers, not an assumption. Twin systems enter as tensors with a leading dimension of two
(``[2, N, K]``), and a composite's values are weighted sums over it (``weights``).
"""

from __future__ import annotations

from typing import NamedTuple

from thermossl.objectives.stochastic_thermodynamics import (
    heat,
    internal_energy,
    irreversible_work,
    swap_heat,
    work,
)
from torch import Tensor

__all__ = [
    "ProcessRecord",
    "adiabatic_step",
    "first_law_residual",
    "isochoric_heating",
    "swap_occupations",
]


class ProcessRecord(NamedTuple):
    r"""What one process did: work on the system, heat given off, the measured change of
    :math:`U`, the irreversible work (adiabatic steps only, else zero) and the final occupations."""

    work: Tensor
    heat: Tensor
    energy_change: Tensor
    irreversible_work: Tensor
    ensemble: Tensor


def _composite(values: Tensor, weights: Tensor | None) -> Tensor:
    """Sum of per-system values with ``weights`` (a plain sum when ``None``)."""
    if weights is None:
        return values.sum() if values.dim() else values
    return (weights.to(values) * values).sum()


def isochoric_heating(
    ensemble: Tensor, energies: Tensor, heated: Tensor, weights: Tensor | None = None
) -> ProcessRecord:
    r"""Heating at fixed weights: :math:`q \to q^*` with :math:`Q = \langle q - q^*,
    \varepsilon\rangle` (eq. 5) and :math:`W = 0`.

    :param torch.Tensor ensemble: ``[..., N, K]`` occupations before.
    :param torch.Tensor energies: ``[..., N, K]`` energies at the fixed weights.
    :param torch.Tensor heated: ``[..., N, K]`` the equilibrium ensemble reached (Sinkhorn-Knopp's
        GGE, a Gibbs ensemble, a hard assignment …).
    :param torch.Tensor weights: weights of the leading systems in the composite (``None``: sum).

    Example::

        >>> energies = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        >>> record = isochoric_heating(torch.full((2, 2), 0.25), energies, torch.eye(2) / 2)
        >>> float(record.heat), float(record.energy_change), float(record.work)
        (0.5, -0.5, 0.0)
    """
    before = internal_energy(ensemble, energies)
    after = internal_energy(heated, energies)
    zero = energies.new_zeros(())
    return ProcessRecord(
        work=zero,
        heat=_composite(heat(ensemble, heated, energies), weights),
        energy_change=_composite(after - before, weights),
        irreversible_work=zero,
        ensemble=heated,
    )


def adiabatic_step(
    ensemble: Tensor,
    energies_before: Tensor,
    energies_after: Tensor,
    beta: float,
    weights: Tensor | None = None,
) -> ProcessRecord:
    r"""A weight step at fixed occupations: :math:`W` (eq. 3), :math:`Q = 0`, and the
    irreversible work :math:`W_{irr}` (eq. 12, 25) at the demon's inverse temperature ``beta``.

    Example::

        >>> q = torch.eye(2, dtype=torch.float64) / 2
        >>> record = adiabatic_step(q, torch.zeros_like(q), -2 * q, beta=1.0)
        >>> float(record.work), float(record.heat)
        (-1.0, 0.0)
    """
    before = internal_energy(ensemble, energies_before)
    after = internal_energy(ensemble, energies_after)
    return ProcessRecord(
        work=_composite(work(ensemble, energies_before, energies_after), weights),
        heat=energies_before.new_zeros(()),
        energy_change=_composite(after - before, weights),
        irreversible_work=_composite(
            irreversible_work(ensemble, energies_before, energies_after, beta), weights
        ),
        ensemble=ensemble,
    )


def swap_occupations(ensembles: Tensor, energies: Tensor) -> ProcessRecord:
    r"""Swap the occupations of twin systems (§II.C): heat eq. 14, no work.

    :param torch.Tensor ensembles: ``[2, ..., N, K]``, the occupations of the two systems.
    :param torch.Tensor energies: ``[2, ..., N, K]``, their energies.
    :returns: the record of the combined system, with ``ensemble`` the swapped ``[2, ..., N, K]``.

    Example::

        >>> ensembles = torch.stack([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])])
        >>> energies = torch.stack([torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])])
        >>> float(swap_occupations(ensembles, energies).heat)
        -3.0
    """
    if ensembles.shape[0] != 2 or energies.shape[0] != 2:
        raise ValueError(
            "ensembles and energies must stack the two twin systems in their first dimension, "
            f"got {tuple(ensembles.shape)} and {tuple(energies.shape)}"
        )
    swapped = ensembles.flip(0)
    before = internal_energy(ensembles, energies).sum(0)
    after = internal_energy(swapped, energies).sum(0)
    return ProcessRecord(
        work=energies.new_zeros(()),
        heat=swap_heat(ensembles[0], ensembles[1], energies[0], energies[1]).sum(),
        energy_change=(after - before).sum(),
        irreversible_work=energies.new_zeros(()),
        ensemble=swapped,
    )


def first_law_residual(record: ProcessRecord) -> Tensor:
    r""":math:`\Delta U - (W - Q)`, zero up to rounding for every process (eq. 3–4)."""
    return record.energy_change - (record.work - record.heat)
