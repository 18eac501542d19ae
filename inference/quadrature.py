r"""The log-normalizer of a low-dimensional energy model by quadrature on a grid.

For :math:`p(x; \Theta) = e^{-E(x; \Theta)} / \Gamma(\Theta)` on a box :math:`B \subset \mathbb{R}^d`,
the midpoint rule on a regular grid of :math:`m = k^d` cells of volume :math:`\Delta` gives

.. math::
    \log \Gamma(\Theta) = \log \int_B e^{-E(x; \Theta)}\, dx
    \approx \log \textstyle\sum_{j=1}^m e^{-E(x_j; \Theta)} + \log \Delta,

whose :math:`\Theta`-gradient is the model expectation of eq. 7 of paper 001,
:math:`\mathbb{E}_{p_\Theta}[-\nabla_\Theta E]`, under the grid's discretization of
:math:`p_\Theta`, with no Markov chain to mix. This is the exact counterpart of the replay-buffer
Langevin sampler for data of one to three dimensions (moons, circles): Table 7's sampler moves a
chain by about 0.01 per step for some twenty steps of its life, while the data span a few units,
so its chains stay near their uniform initialization and the Monte Carlo stand-in for
:math:`\log \Gamma` is biased (the training diverges, see the README). The cost is :math:`k^d`
energy evaluations per step.

:class:`GridQuadrature` has the sampler's interface (``init``, ``sample``), so the training loop
treats both alike; its state is the grid, a :class:`QuadratureGrid`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from thermossl._validation import check_finite, check_positive_integer

__all__ = ["GridQuadrature", "QuadratureGrid"]


class QuadratureGrid(NamedTuple):
    """Cell midpoints ``[k^d, d]`` of a regular grid on a box, and the log-volume of one cell."""

    points: Tensor
    log_cell_volume: float

    def log_normalizer(self, energy: Callable[[Tensor], Tensor]) -> Tensor:
        r""":math:`\log \sum_j e^{-E(x_j)} + \log \Delta`, differentiable in :math:`E`'s parameters."""
        return torch.logsumexp(-energy(self.points), dim=0) + self.log_cell_volume


class GridQuadrature:
    r"""A midpoint grid with ``points_per_axis`` cells per axis on the data's bounding box,
    widened by ``margin`` (a share of each side's length) on every side.

    :param int points_per_axis: :math:`k`.
    :param float margin: the share of the box's side added on each end.
    :param int max_dim: the largest dimension accepted (the grid has :math:`k^d` points).

    Example: the normalizer of a standard normal restricted to a wide box is :math:`2\pi`::

        >>> import math
        >>> quadrature = GridQuadrature(points_per_axis=200)
        >>> grid = quadrature.init(torch.tensor([[-8.0, -8.0], [8.0, 8.0]]).double())
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> round(float(grid.log_normalizer(energy)), 6), round(math.log(2 * math.pi), 6)
        (1.837877, 1.837877)
    """

    def __init__(self, points_per_axis: int = 64, margin: float = 0.05, max_dim: int = 3):
        check_positive_integer("points_per_axis", points_per_axis)
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin!r}")
        self.points_per_axis = int(points_per_axis)
        self.margin = float(margin)
        self.max_dim = int(max_dim)

    def init(self, data: Tensor, *, generator: torch.Generator | None = None) -> QuadratureGrid:
        """The grid on the bounding box of ``data`` ``[N, d]`` (``generator`` is unused)."""
        if data.dim() != 2 or data.shape[0] < 1:
            raise ValueError(f"data must have shape [N, d] with N >= 1, got {tuple(data.shape)}")
        d = data.shape[1]
        if d > self.max_dim:
            raise ValueError(
                f"quadrature needs {self.points_per_axis}^{d} points for {d}-dimensional data; "
                f"it is meant for d <= {self.max_dim}: use the Langevin sampler instead"
            )
        check_finite("data", data)
        lower, upper = data.amin(0), data.amax(0)
        width = upper - lower
        if not bool((width > 0).all()):
            raise ValueError("the data's bounding box is flat along some axis")
        lower, upper = lower - self.margin * width, upper + self.margin * width
        k = self.points_per_axis
        cell = (upper - lower) / k
        axes = [lower[i] + cell[i] * (torch.arange(k, dtype=data.dtype) + 0.5) for i in range(d)]
        points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, d)
        return QuadratureGrid(points, float(torch.log(cell).sum()))

    def sample(
        self,
        state: QuadratureGrid,
        energy: Callable[[Tensor], Tensor],
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[QuadratureGrid, QuadratureGrid, None]:
        """The sampler's interface: the grid stands in for the samples, unchanged."""
        return state, state, None
