r"""Sinkhorn-Knopp, log-domain safe: the entropic transport plan between samples and labels.

For energies :math:`\varepsilon_{ij}` of sample :math:`i \in \{1..N\}` under label
:math:`j \in \{1..K\}` and an inverse temperature :math:`\beta`, the plan

.. math::

    q^* = \arg\min_{q \in U(r, c)} \; \langle q, \varepsilon \rangle - \tfrac{1}{\beta} S[q],
    \qquad U(r, c) = \{ q \ge 0 : \textstyle\sum_j q_{ij} = r_i,\ \sum_i q_{ij} = c_j \}

is the generalized Gibbs ensemble :math:`q^*_{ij} = C \exp(-\beta \varepsilon_{ij} - a_j - b_i)`
of Salazar (2021), eq. (20)–(24), with uniform marginals :math:`r_i = 1/N`, :math:`c_j = 1/K` by
default. Sinkhorn-Knopp finds the potentials :math:`a, b` by alternately matching the label
(column) and the sample (row) marginals. The potentials are kept in the log domain, so large
:math:`\beta` (cold, nearly hard assignments) neither overflows nor loses rows or columns to
underflow; each sweep itself is two matrix-vector products on a kernel that has absorbed them
(Schmitzer 2019), which is what makes SwAV-scale problems (``4096 x 3000``) cheap.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from thermossl._validation import (
    _VALUE_CHECKS,
    check_finite,
    check_positive,
    check_positive_integer,
    check_tensor,
)

__all__ = ["sinkhorn_knopp"]


def sinkhorn_knopp(
    energies: Tensor,
    beta: float,
    row_marginal: Tensor | None = None,
    col_marginal: Tensor | None = None,
    iterations: int | None = None,
    tolerance: float | None = None,
    max_iterations: int = 10_000,
) -> Tensor:
    r"""Entropic transport plan :math:`q^*` between samples (rows) and labels (columns).

    .. math::

        \log q \leftarrow -\beta\varepsilon - \operatorname{logsumexp}(-\beta\varepsilon), \quad
        \text{repeat: }
        \log q_{ij} \leftarrow \log q_{ij} - \log\textstyle\sum_i q_{ij} + \log c_j,\;
        \log q_{ij} \leftarrow \log q_{ij} - \log\textstyle\sum_j q_{ij} + \log r_i

    (Cuturi 2013; Salazar 2021, eq. 20 and 24). Each sweep first matches the label marginals and
    then the sample marginals, the order of SwAV's ``distributed_sinkhorn`` (Caron et al. 2020),
    so ``iterations=3`` with ``beta = 1 / 0.05`` and ``energies = -scores`` reproduces SwAV's codes
    as ``N * q``.

    The same iterates are computed in a stabilized form (Schmitzer 2019, Algorithm 3.1 of
    arXiv:1610.06519, as POT's ``sinkhorn_stabilized``): with log-potentials :math:`f, g` held
    in a kernel and scalings :math:`u, v` on top of it,

    .. math::

        q_{ij} = u_i K_{ij} v_j, \quad K_{ij} = e^{-\beta\varepsilon_{ij} + f_i + g_j}, \qquad
        v \leftarrow c \oslash K^\top u, \quad u \leftarrow r \oslash K v,

    so a sweep costs two matrix-vector products, and the label error
    :math:`\max_j |v_j (K^\top u)_j - c_j|` comes with the next sweep's first product. The kernel
    starts as :math:`e^{-\beta(\varepsilon - \min\varepsilon)} \in (0, 1]` per problem. When a
    sweep's scalings leave :math:`[1/B, B]` (:math:`B = \text{float max}^{1/4}`, about ``1e77`` in
    float64 and ``1e9`` in float32) or are not finite (a row or column of :math:`K` underflowed),
    the sweep is redone exactly with log-sum-exp from the row potential :math:`f + \log u` at its
    start, and the kernel is rebuilt around the potentials it yields (:math:`u = v = 1`).
    While autograd records the solve (energies or marginals that require grad), or while a
    program is recorded or compiled, the plain log-domain loop above runs instead: it is
    differentiable and free of data-dependent branches for fixed ``iterations``.

    :param torch.Tensor energies: ``[..., N, K]`` energies; leading dimensions are a batch of
        independent problems.
    :param float beta: inverse temperature :math:`\beta > 0`.
    :param torch.Tensor row_marginal: ``[..., N]`` positive sample marginals summing to one
        (default uniform :math:`1/N`); a sum within ``1e-5`` of one is renormalized exactly.
    :param torch.Tensor col_marginal: ``[..., K]`` positive label marginals summing to one
        (default uniform :math:`1/K`); renormalized likewise.
    :param int iterations: run exactly this many sweeps (SwAV uses 3); ``None`` iterates until the
        label marginals match to ``tolerance`` (the sample marginals then hold to rounding).
    :param float tolerance: largest absolute error allowed in the label marginals; by default
        ``1e-9`` in float64 and ``1e-6`` in lower precision (where rounding floors the error
        near ``1e-8``).
    :param int max_iterations: cap on the sweeps when ``iterations`` is ``None``; reaching it
        without meeting ``tolerance`` emits a :class:`RuntimeWarning` with the error reached.
    :returns: ``[..., N, K]`` plan :math:`q` with ``q.sum((-2, -1)) == 1``.
    :raises ValueError: on non-finite energies or marginals, ``beta <= 0``, marginals of the wrong
        shape, not positive or not summing to one, ``iterations``, ``max_iterations`` that are not
        positive integers or ``tolerance <= 0``.

    .. warning:: The returned plan sums to one over the whole matrix. SwAV's "codes" are the
        per-sample label distributions ``q / q.sum(-1, keepdim=True)``, i.e. ``N * q`` for
        uniform sample marginals.

    .. note:: Plan entries below :math:`B^2 \cdot \text{tiny}` (about ``1e-153`` in float64,
        ``1e-20`` in float32) are exact only in absolute terms: the kernel stores them as
        subnormals or zero. Every marginal is unaffected.

    Example::

        >>> energies = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
        >>> q = sinkhorn_knopp(energies, beta=2.0)
        >>> q.sum(-1)  # sample marginals 1/N
        tensor([0.3333, 0.3333, 0.3333], dtype=torch.float64)
        >>> q.sum(-2)  # label marginals 1/K
        tensor([0.5000, 0.5000], dtype=torch.float64)
    """
    check_tensor("energies", energies, min_dim=2)
    lowest = _checked_lowest_energies(energies)
    check_positive("beta", beta)
    num_samples, num_labels = energies.shape[-2:]
    log_r = _log_marginal("row_marginal", row_marginal, energies, num_samples)
    log_c = _log_marginal("col_marginal", col_marginal, energies, num_labels)
    if iterations is not None:
        check_positive_integer("iterations", iterations)
    check_positive_integer("max_iterations", max_iterations)
    if tolerance is None:
        tolerance = 1e-9 if energies.dtype == torch.float64 else 1e-6
    check_positive("tolerance", tolerance)

    if lowest is None or _records_gradients(energies, row_marginal, col_marginal):
        return _log_domain_sinkhorn(
            energies, beta, log_r, log_c, iterations, tolerance, max_iterations
        )
    batch = torch.broadcast_shapes(energies.shape[:-2], log_r.shape[:-1], log_c.shape[:-1])
    if batch != energies.shape[:-2]:  # batched marginals for one matrix: one problem each
        energies = energies.expand(*batch, num_samples, num_labels)
        lowest = lowest.expand(batch)
    with torch.no_grad():
        return _stabilized_sinkhorn(
            energies, lowest, beta, log_r, log_c, iterations, tolerance, max_iterations
        )


def _log_marginal(name: str, marginal: Tensor | None, energies: Tensor, size: int) -> Tensor:
    if marginal is None:
        return energies.new_full((*energies.shape[:-2], size), -math.log(size))
    check_tensor(name, marginal)
    if marginal.shape[-1] != size:
        raise ValueError(
            f"{name} must have {size} entries in its last dimension, got {tuple(marginal.shape)}"
        )
    check_finite(name, marginal)
    if _VALUE_CHECKS.get() and not torch.compiler.is_compiling():  # not while recording
        if bool((marginal <= 0).any()):
            raise ValueError(f"{name} must be strictly positive")
        if not torch.allclose(marginal.sum(-1), marginal.new_ones(())):
            raise ValueError(f"{name} must sum to 1 along its last dimension")
    log_marginal = marginal.to(dtype=energies.dtype, device=energies.device).log()
    return log_marginal - torch.logsumexp(log_marginal, dim=-1, keepdim=True)


def _checked_lowest_energies(energies: Tensor) -> Tensor | None:
    """Each problem's lowest energy (``[...]``) after checking that every energy is finite, in
    one pass over the matrix; ``None`` for an empty matrix or while a program is recorded or
    compiled (no data-dependent branches: the plain log-domain loop runs)."""
    if not _VALUE_CHECKS.get() or torch.compiler.is_compiling():
        return None
    if energies.numel() == 0:
        check_finite("energies", energies)
        return None
    if energies.dim() == 2:  # the reduction over all entries is the faster kernel
        lowest, highest = torch.aminmax(energies)  # NaN propagates
    else:
        lowest, highest = torch.aminmax(energies.flatten(-2), dim=-1)
    if not bool((torch.isfinite(lowest) & torch.isfinite(highest)).all()):
        check_finite("energies", energies)  # raises, naming the count of non-finite values
    return lowest


def _records_gradients(*tensors: Tensor | None) -> bool:
    """Whether autograd records the solve: then the differentiable log-domain loop runs (the
    stabilized loop works in place and without gradient)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _log_domain_sinkhorn(
    energies: Tensor,
    beta: float,
    log_r: Tensor,
    log_c: Tensor,
    iterations: int | None,
    tolerance: float,
    max_iterations: int,
) -> Tensor:
    """Reference loop: two log-sum-exp passes over ``[..., N, K]`` per sweep (differentiable)."""
    log_q = -beta * energies
    log_q = log_q - torch.logsumexp(log_q, dim=(-2, -1), keepdim=True)
    sweeps = iterations if iterations is not None else max_iterations
    for _ in range(sweeps):
        log_q = log_q - torch.logsumexp(log_q, dim=-2, keepdim=True) + log_c.unsqueeze(-2)
        log_q = log_q - torch.logsumexp(log_q, dim=-1, keepdim=True) + log_r.unsqueeze(-1)
        if iterations is None:
            label_error = float((log_q.detach().exp().sum(-2) - log_c.exp()).abs().max())
            if label_error <= tolerance:
                break
    else:
        if iterations is None:
            _warn_not_converged(tolerance, max_iterations, label_error)
    return log_q.exp()


def _stabilized_sinkhorn(
    energies: Tensor,
    lowest: Tensor,
    beta: float,
    log_r: Tensor,
    log_c: Tensor,
    iterations: int | None,
    tolerance: float,
    max_iterations: int,
) -> Tensor:
    """Scaling vectors on a kernel that absorbs the log-potentials (Schmitzer 2019, Alg. 3.1).

    The plan is ``u_i K_ij v_j`` with ``K = exp(-beta * eps + f_i + g_j)``; a sweep is two
    matrix-vector products. A sweep whose scalings leave ``[1/bound, bound]`` (or are not
    finite: an underflowed row or column of ``K``) is redone exactly in the log domain from the
    potentials at its start, and ``K`` is rebuilt around the new potentials.
    """
    r, c = log_r.exp(), log_c.exp()
    bound = _scaling_bound(energies.dtype)
    # K = exp(-beta * (eps - min eps)) = exp(-beta * eps + f): entries in (0, 1], no overflow.
    f = beta * lowest.unsqueeze(-1)  # row log-potential of K, shared by the rows
    kernel = torch.add(f.unsqueeze(-1), energies, alpha=-beta).exp_()
    f = f.expand(kernel.shape[:-1])
    u = u_before = kernel.new_ones(kernel.shape[:-1])
    v = kernel.new_ones(kernel.shape[:-2] + kernel.shape[-1:])
    check = iterations is None
    sweeps = iterations if iterations is not None else max_iterations
    for sweep in range(sweeps + 1):  # `sweep` sweeps are done; check them, then run the next
        last = sweep == sweeps
        # (u^T K)_j: the next label update's product, and v_j times it is the label marginal.
        column_sums = _vector_matrix(u, kernel) if check or not last else None
        if sweep > 0:  # one synchronization per sweep: the scalings' range and the label error
            spread = torch.stack([u.amax(), v.amax(), u.amin().reciprocal(), v.amin().reciprocal()])
            if check:
                label_error = (v * column_sums - c).abs().amax()
                spread, label_error = torch.stack([spread.amax(), label_error]).tolist()
            else:
                spread = float(spread.amax())
            if not spread <= bound:  # also NaN: redo the sweep in the log domain, absorb
                f, kernel = _log_domain_sweep(energies, beta, f + u_before.log(), log_r, log_c)
                u, v = torch.ones_like(u), torch.ones_like(v)
                if column_sums is not None:
                    column_sums = _vector_matrix(u, kernel)
                if check:
                    label_error = float((v * column_sums - c).abs().amax())
            if check and label_error <= tolerance:
                return _plan(u, kernel, v)
        if last:
            break
        u_before = u
        v = c / column_sums
        u = r / _matrix_vector(kernel, v)
    if check:
        _warn_not_converged(tolerance, max_iterations, label_error)
    return _plan(u, kernel, v)


def _log_domain_sweep(
    energies: Tensor, beta: float, f: Tensor, log_r: Tensor, log_c: Tensor
) -> tuple[Tensor, Tensor]:
    """One exact sweep from the row log-potential ``f`` (labels, then samples).

    Returns the new row log-potential and the plan it gives, ``exp(-beta * eps + f_i + g_j)``,
    whose rows sum to ``r`` and whose entries lie in ``[0, 1]``: the kernel of the next sweeps.
    """
    log_kernel = torch.add(f.unsqueeze(-1), energies, alpha=-beta)
    log_kernel.add_((log_c - torch.logsumexp(log_kernel, dim=-2)).unsqueeze(-2))
    shift = log_kernel.amax(dim=-1, keepdim=True)
    kernel = log_kernel.sub_(shift).exp_()
    sums = kernel.sum(dim=-1, keepdim=True)
    kernel.mul_(log_r.exp().unsqueeze(-1) / sums)
    return f + log_r - (shift + sums.log()).squeeze(-1), kernel


def _scaling_bound(dtype: torch.dtype) -> float:
    """Largest scaling kept before absorbing: products of two scalings, a kernel entry in
    ``[0, 1]`` and a sum over ``N`` or ``K`` terms cannot overflow, and an underflowed kernel
    entry stands for a plan entry below ``bound**2 * tiny`` (``1e-153`` in float64)."""
    return torch.finfo(dtype).max ** 0.25


def _vector_matrix(u: Tensor, kernel: Tensor) -> Tensor:
    """``(u^T K)_j`` over the leading dimensions (a BLAS gemv for one problem)."""
    if kernel.dim() == 2:
        return u @ kernel
    return torch.matmul(u.unsqueeze(-2), kernel).squeeze(-2)


def _matrix_vector(kernel: Tensor, v: Tensor) -> Tensor:
    """``(K v)_i`` over the leading dimensions."""
    if kernel.dim() == 2:
        return kernel @ v
    return torch.matmul(kernel, v.unsqueeze(-1)).squeeze(-1)


def _plan(u: Tensor, kernel: Tensor, v: Tensor) -> Tensor:
    return kernel.mul_(u.unsqueeze(-1)).mul_(v.unsqueeze(-2))


def _warn_not_converged(tolerance: float, max_iterations: int, label_error: float) -> None:
    warnings.warn(
        f"sinkhorn_knopp did not reach tolerance {tolerance:.1e} in {max_iterations} "
        f"sweeps (label-marginal error {label_error:.2e}); raise max_iterations or "
        "lower beta",
        RuntimeWarning,
        stacklevel=4,  # the caller of sinkhorn_knopp
    )
