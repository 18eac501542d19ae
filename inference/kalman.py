r"""Kalman filtering for linear-Gaussian state-space models, sequentially or in parallel over time.

The model, for :math:`t = 1, \dots, T`, is

.. math::

    x_0 \sim \mathcal N(m_0, P_0), \qquad
    x_t = A_t x_{t-1} + c_t + w_t,\; w_t \sim \mathcal N(0, Q_t), \qquad
    z_t = H_t x_t + v_t,\; v_t \sim \mathcal N(0, R_t),

with hidden states :math:`x_t \in \mathbb R^D` and observations :math:`z_t \in \mathbb R^L`
(:math:`D > L` is allowed). The first transition acts *before* the first observation, as in
:class:`pyro.distributions.GaussianHMM` (whose ``initial_dist`` is the law of :math:`x_0`) and in
Särkkä & García-Fernández (2021); ``dynamax`` instead observes :math:`x_0` directly.

:func:`kalman_filter` returns the filtered and one-step-predicted moments at every step and the
log-likelihood :math:`\log p(z_{1:T})`, either by the textbook recursion (``parallel=False``,
depth :math:`O(T)`) or by all-prefix associative scans (``parallel=True``, depth
:math:`O(\log T)`), both written with batched torch operations and differentiable end to end.

References:

1. S. Särkkä and Á. F. García-Fernández (2021), "Temporal parallelization of Bayesian smoothers",
   IEEE Transactions on Automatic Control 66(1), 299–306, arXiv:1905.13002 (Sec. IV-A).
2. S. Särkkä (2013), *Bayesian Filtering and Smoothing*, Cambridge University Press, Ch. 4
   (the Kalman filter).
3. L. Mikulasch and F. Zenke, "Understanding self-supervised learning via latent distribution
   matching", eq. (15) (the Kalman predictor's log-likelihood as a prediction-error
   decomposition).
4. G. E. Blelloch (1990), "Prefix sums and their applications", CMU-CS-90-190.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from thermossl._validation import _VALUE_CHECKS, check_finite, check_tensor

__all__ = ["KalmanFilterResult", "kalman_filter"]


class KalmanFilterResult(NamedTuple):
    """What :func:`kalman_filter` returns; ``...`` is the broadcast batch shape of the inputs.

    :ivar torch.Tensor log_likelihood: ``[...]`` :math:`\\log p(z_{1:T})`, summed over time.
    :ivar torch.Tensor predicted_mean: ``[..., T, D]`` :math:`\\bar m_t = E[x_t \\mid z_{1:t-1}]`.
    :ivar torch.Tensor predicted_covariance: ``[..., T, D, D]``
        :math:`\\bar P_t = \\operatorname{Cov}[x_t \\mid z_{1:t-1}]`.
    :ivar torch.Tensor filtered_mean: ``[..., T, D]`` :math:`m_t = E[x_t \\mid z_{1:t}]`.
    :ivar torch.Tensor filtered_covariance: ``[..., T, D, D]``
        :math:`P_t = \\operatorname{Cov}[x_t \\mid z_{1:t}]`.
    """

    log_likelihood: Tensor
    predicted_mean: Tensor
    predicted_covariance: Tensor
    filtered_mean: Tensor
    filtered_covariance: Tensor


def kalman_filter(
    observations: Tensor,
    transition_matrix: Tensor,
    transition_offset: Tensor,
    transition_covariance: Tensor,
    observation_matrix: Tensor,
    observation_covariance: Tensor,
    initial_mean: Tensor,
    initial_covariance: Tensor,
    parallel: bool = True,
) -> KalmanFilterResult:
    r"""Filter a linear-Gaussian state-space model and score its observations.

    Predict and update (Särkkä 2013, Ch. 4), with :math:`m_0, P_0` the initial moments:

    .. math::

        \bar m_t = A_t m_{t-1} + c_t, \qquad \bar P_t = A_t P_{t-1} A_t^\top + Q_t,

        S_t = H_t \bar P_t H_t^\top + R_t, \qquad K_t = \bar P_t H_t^\top S_t^{-1},

        m_t = \bar m_t + K_t (z_t - H_t \bar m_t), \qquad
        P_t = (I - K_t H_t) \bar P_t (I - K_t H_t)^\top + K_t R_t K_t^\top,

        \log p(z_{1:T}) = \sum_{t=1}^T \log \mathcal N(z_t;\, H_t \bar m_t,\, S_t)

    (the prediction-error decomposition, LDM eq. 15; the covariance update is Joseph's form).
    ``parallel=False`` runs this recursion step by step, with Cholesky solves.

    ``parallel=True`` computes the same quantities with all-prefix scans of depth
    :math:`O(\log T)`. The covariances do not depend on the observations, so the first scan runs
    over the observation-free parts :math:`(\mathcal A, C, J)` of the filtering elements of
    Särkkä & García-Fernández (2021), eq. (10)–(12): for :math:`t \ge 2`, with
    :math:`\Sigma_t = H_t Q_t H_t^\top + R_t = N_t N_t^\top`, :math:`Y_t = N_t^{-1} H_t Q_t` and
    :math:`W_t = N_t^{-1} H_t A_t`,

    .. math::

        \mathcal A_t = (I - \Gamma_t H_t) A_t = A_t - Y_t^\top W_t, \quad
        C_t = (I - \Gamma_t H_t) Q_t = Q_t - Y_t^\top Y_t, \quad
        J_t = A_t^\top H_t^\top \Sigma_t^{-1} H_t A_t = W_t^\top W_t

    (:math:`\Gamma_t = Q_t H_t^\top \Sigma_t^{-1}`), and :math:`(\mathcal A_1, C_1, J_1) =
    (0, P_1, 0)` with :math:`P_1` one ordinary step from :math:`P_0`. Their associative operator
    (ibid., Sec. IV-A), with element :math:`i` before :math:`j`,

    .. math::

        \mathcal A_{ij} = \mathcal A_j (I + C_i J_j)^{-1} \mathcal A_i, \quad
        C_{ij} = \mathcal A_j (I + C_i J_j)^{-1} C_i \mathcal A_j^\top + C_j, \quad
        J_{ij} = \mathcal A_i^\top (I + J_j C_i)^{-1} J_j \mathcal A_i + J_i,

    gives the filtered covariance :math:`P_t` as the :math:`C` part of the prefix
    :math:`e_1 \otimes \cdots \otimes e_t`. Where :math:`J_j = W_j^\top W_j` is known, the inverse
    is applied by Woodbury's identity through a Cholesky factorization of the
    :math:`L \times L` matrix :math:`I + W_j C_i W_j^\top \succeq I`; otherwise through one LU
    factorization of :math:`I + C_i J_j`. Every prefix has the form :math:`(0, P_t, 0)`, so the
    recursive odd/even scan (Blelloch 1990; as ``jax.lax.associative_scan``) needs the full
    operator only for the pairs of its up-sweep, and fills the other prefixes by
    :math:`P_{t+1} = \mathcal A (I + P_t J)^{-1} P_t \mathcal A^\top + C`; when
    :math:`A, Q, H, R` are time-invariant, :math:`e_2 = \dots = e_T = g` and the prefixes double
    per round, :math:`e_1 \otimes g^{\otimes(t-1+n)} = (e_1 \otimes g^{\otimes(t-1)}) \otimes
    g^{\otimes n}` with :math:`g^{\otimes 2n} = g^{\otimes n} \otimes g^{\otimes n}`.

    From all :math:`P_{t-1}` at once follow :math:`\bar P_t`, :math:`S_t = M_t M_t^\top`, and by
    one triangular solve :math:`[B_t, V_t, \hat z_t] = M_t^{-1} [H_t \bar P_t, H_t, z_t]` the
    gain :math:`K_t = B_t^\top M_t^{-1}`. The means obey
    :math:`m_t = F_t m_{t-1} + u_t` with :math:`F_t = (I - K_t H_t) A_t` and
    :math:`u_t = (I - K_t H_t) c_t + K_t z_t` (the :math:`b, \eta` parts of the same elements
    carry this information), a second scan over the compositions
    :math:`(F_j, u_j) \circ (F_i, u_i) = (F_j F_i,\, F_j u_i + u_j)`. The log-likelihood is one
    batched Gaussian log-density over every step, with whitened innovations
    :math:`M_t^{-1}(z_t - H_t \bar m_t) = \hat z_t - V_t \bar m_t`.

    **Shapes (broadcasting rule).** ``observations`` is ``[..., T, L]``. Each model parameter is
    either time-invariant, given without a time dimension — :math:`A` ``[D, D]``, :math:`c`
    ``[D]``, :math:`Q` ``[D, D]``, :math:`H` ``[L, D]``, :math:`R` ``[L, L]`` — or carries a time
    dimension of size ``T`` (or 1, to share it) right before its event dimensions, after any
    batch dimensions: ``[..., T, D, D]``, ``[..., T, D]``, ``[..., T, D, D]``, ``[..., T, L, D]``,
    ``[..., T, L, L]``; time-varying (e.g. input-dependent) covariances :math:`Q_t, R_t` are given
    this way. The initial moments have no time dimension: ``[..., D]`` and ``[..., D, D]``. All
    batch dimensions broadcast together to the result's batch shape ``...``.

    :param torch.Tensor observations: ``[..., T, L]`` observations :math:`z_{1:T}`, ``T >= 1``.
    :param torch.Tensor transition_matrix: :math:`A`, ``[D, D]`` or ``[..., T, D, D]``.
    :param torch.Tensor transition_offset: :math:`c`, ``[D]`` or ``[..., T, D]``.
    :param torch.Tensor transition_covariance: :math:`Q`, symmetric positive definite,
        ``[D, D]`` or ``[..., T, D, D]``.
    :param torch.Tensor observation_matrix: :math:`H`, ``[L, D]`` or ``[..., T, L, D]``.
    :param torch.Tensor observation_covariance: :math:`R`, symmetric positive definite,
        ``[L, L]`` or ``[..., T, L, L]``.
    :param torch.Tensor initial_mean: :math:`m_0`, ``[..., D]``, the mean of :math:`x_0`.
    :param torch.Tensor initial_covariance: :math:`P_0`, symmetric positive definite,
        ``[..., D, D]``.
    :param bool parallel: use the associative scans (depth :math:`O(\log T)`, default) rather than
        the sequential recursion (depth :math:`O(T)`); both give the same numbers to rounding.
    :returns: a :class:`KalmanFilterResult`. The log-likelihood is summed over time, one value per
        sequence. Covariances do not depend on the observations: where the batch shape comes only
        from the observations (or the means), they are computed once and returned as broadcast
        views (:meth:`torch.Tensor.expand`); call ``.contiguous()`` before writing into them.
    :raises ValueError: on ``T = 0``, shapes that do not fit (naming the argument), a time
        dimension other than 1 or ``T``, NaN or infinite entries, or covariances that are not
        symmetric positive definite.
    :raises TypeError: on non-tensors or tensors that are not floating point. Inputs of mixed
        floating dtypes are promoted to their common dtype (as torch's arithmetic does), which is
        the dtype of the results.

    .. warning:: The first transition is applied before the first observation:
        ``initial_mean``/``initial_covariance`` describe :math:`x_0`, and ``z_1`` observes
        :math:`x_1 = A_1 x_0 + c_1 + w_1`, as in Pyro's ``GaussianHMM``. To place the prior on the
        first observed state instead (``dynamax``'s convention), pass ``A_1 = 0``, ``c_1 = m``,
        ``Q_1 = P`` (a time-varying first step; ``initial_covariance`` then does not matter).

    .. note:: Only the symmetric parts of :math:`Q, R, P_0` are used, so their gradients are
        symmetric. Covariance computations run over the batch dimensions of the parameters only
        (those of :math:`A, Q, H, R, P_0`); the means treat the remaining batch dimensions as
        columns of one matrix per step. A batch of sequences that shares its parameters thus
        costs one covariance recursion, not one per sequence.

    Example::

        >>> generator = torch.Generator().manual_seed(0)
        >>> z = torch.randn(2, 5, 1, generator=generator)  # 2 sequences, T = 5, L = 1
        >>> A, c, Q = 0.9 * torch.eye(2), torch.zeros(2), 0.1 * torch.eye(2)  # D = 2
        >>> H, R = torch.tensor([[1.0, 0.0]]), torch.eye(1)
        >>> m0, P0 = torch.zeros(2), torch.eye(2)
        >>> result = kalman_filter(z, A, c, Q, H, R, m0, P0)
        >>> result.filtered_mean.shape, result.filtered_covariance.shape
        (torch.Size([2, 5, 2]), torch.Size([2, 5, 2, 2]))
        >>> sequential = kalman_filter(z, A, c, Q, H, R, m0, P0, parallel=False)
        >>> torch.allclose(result.log_likelihood, sequential.log_likelihood)
        True
    """
    model = _prepare(
        observations,
        transition_matrix,
        transition_offset,
        transition_covariance,
        observation_matrix,
        observation_covariance,
        initial_mean,
        initial_covariance,
    )
    run = _parallel_filter if parallel else _sequential_filter
    log_likelihood, predicted_mean, predicted_covariance, filtered_mean, filtered_covariance = run(
        model
    )
    layout = model.layout
    return KalmanFilterResult(
        log_likelihood=layout.from_columns(log_likelihood, 0),
        predicted_mean=layout.from_columns(predicted_mean, 2),
        predicted_covariance=layout.from_parameter(predicted_covariance, 3),
        filtered_mean=layout.from_columns(filtered_mean, 2),
        filtered_covariance=layout.from_parameter(filtered_covariance, 3),
    )


# --------------------------------------------------------------------------------------------
# Layout: covariances carry only the parameters' batch dimensions; means carry the batch
# dimensions that the covariances share as trailing *columns*, so that every mean update is one
# batched matrix product [D, D] @ [D, N] per time step instead of N matrix-vector products.
# --------------------------------------------------------------------------------------------


class _Layout:
    """Maps between the user's batch shape and the internal (kept dims, columns) layout."""

    def __init__(self, batch_shape: tuple[int, ...], parameter_batch_shape: tuple[int, ...]):
        self.batch_shape = batch_shape
        size = len(batch_shape)
        parameter = (1,) * (size - len(parameter_batch_shape)) + tuple(parameter_batch_shape)
        self.shared = [i for i in range(size) if parameter[i] == 1 and batch_shape[i] != 1]
        self.kept = [i for i in range(size) if i not in self.shared]
        self.columns = math.prod(batch_shape[i] for i in self.shared)

    def _pad(self, x: Tensor, event_ndim: int) -> Tensor:
        missing = len(self.batch_shape) - (x.dim() - event_ndim)
        return x.reshape((1,) * missing + tuple(x.shape)) if missing > 0 else x

    def parameter(self, x: Tensor, event_ndim: int) -> Tensor:
        """``[*batch, *event]`` (batch size 1 on shared dims) → ``[*kept, *event]``."""
        x = self._pad(x, event_ndim)
        return x.reshape([x.shape[i] for i in self.kept] + list(x.shape[len(self.batch_shape) :]))

    def to_columns(self, x: Tensor, event_ndim: int) -> Tensor:
        """``[*batch, *event]`` → ``[*kept, *event, N]`` (``N = 1`` if constant over columns)."""
        x = self._pad(x, event_ndim)
        size = len(self.batch_shape)
        event = list(x.shape[size:])
        kept = [x.shape[i] for i in self.kept]
        if all(x.shape[i] == 1 for i in self.shared):
            return x.reshape([*kept, *event, 1])
        shape = [self.batch_shape[i] if i in self.shared else x.shape[i] for i in range(size)]
        x = x.expand([*shape, *event])
        x = x.permute([*self.kept, *range(size, size + event_ndim), *self.shared])
        return x.reshape([*kept, *event, self.columns])

    def from_columns(self, x: Tensor, event_ndim: int) -> Tensor:
        """``[*kept, *event, N]`` → ``[*batch, *event]``, the inverse of :meth:`to_columns`."""
        size = len(self.batch_shape)
        shared = [self.batch_shape[i] for i in self.shared]
        x = x.expand([*x.shape[:-1], self.columns]).reshape([*x.shape[:-1], *shared])
        order = self.kept + list(range(size, size + event_ndim)) + self.shared
        x = x.permute([order.index(i) for i in range(size + event_ndim)])
        return x.expand([*self.batch_shape, *x.shape[size:]])

    def from_parameter(self, x: Tensor, event_ndim: int) -> Tensor:
        """``[*kept, *event]`` → a broadcast view ``[*batch, *event]``."""
        size = len(self.batch_shape)
        shape = list(x.shape[: x.dim() - event_ndim])
        for i in self.shared:
            shape.insert(i, 1)
        x = x.reshape([*shape, *x.shape[x.dim() - event_ndim :]])
        return x.expand([*self.batch_shape, *x.shape[size:]])


class _Model(NamedTuple):
    """Inputs in the internal layout; matrices are ``[*kept, T or 1, rows, cols]``."""

    z: Tensor  # [*kept, T, L, N]
    A: Tensor  # [*kept, T|1, D, D]
    c: Tensor  # [*kept, T|1, D, N|1]
    Q: Tensor  # [*kept, T|1, D, D]
    H: Tensor  # [*kept, T|1, L, D]
    R: Tensor  # [*kept, T|1, L, L]
    m0: Tensor  # [*kept, D, N|1]
    P0: Tensor  # [*kept, D, D]
    layout: _Layout


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _value_checks_enabled() -> bool:
    return _VALUE_CHECKS.get() and not torch.compiler.is_compiling()


def _check_argument(
    name: str,
    value: object,
    reference: Tensor,
    event_shape: tuple[int, ...],
    symbols: str,
    time_steps: int | None,
) -> tuple[int, ...]:
    """Check one input and return its batch shape (without the time dimension)."""
    check_tensor(name, value, min_dim=len(event_shape))
    assert isinstance(value, Tensor)
    if value.device != reference.device:
        raise ValueError(
            f"{name} must be on the device of observations ({reference.device}), got {value.device}"
        )
    event_ndim = len(event_shape)
    expected = f"[{symbols}]" + (
        f" or [..., T, {symbols}]" if time_steps is not None else f" or [..., {symbols}]"
    )
    if tuple(value.shape[value.dim() - event_ndim :]) != event_shape:
        sizes = dict(zip(symbols.split(", "), event_shape, strict=True))
        where = ", ".join(f"{s}={n}" for s, n in sizes.items())
        raise ValueError(
            f"{name} must have shape {expected} with {where} (L is the last dimension of "
            f"observations, D that of transition_matrix), got {tuple(value.shape)}"
        )
    batch = tuple(value.shape[: value.dim() - event_ndim])
    if time_steps is not None and batch:
        if batch[-1] not in (1, time_steps):
            raise ValueError(
                f"{name} has a time dimension (dim -{event_ndim + 1}) of size {batch[-1]}; "
                f"expected T={time_steps} (or 1) as in {expected}, got shape {tuple(value.shape)}"
            )
        batch = batch[:-1]
    _check_finite(name, value)
    return batch


def _check_finite(name: str, value: Tensor) -> None:
    """:func:`check_finite`, after a one-pass test: a finite sum proves every entry finite."""
    if _value_checks_enabled() and not bool(torch.isfinite(value.detach().sum())):
        check_finite(name, value)  # raises, unless the sum merely overflowed


def _check_positive_definite(name: str, value: Tensor, symmetric: Tensor) -> None:
    """Raise unless every matrix in ``value`` is symmetric (to ``sqrt(eps)`` relative) and
    positive definite (its Cholesky factorization succeeds); ``symmetric`` is its symmetric
    part, which the filter uses."""
    if not _value_checks_enabled() or value.numel() == 0:
        return
    value, symmetric = value.detach(), symmetric.detach()
    scale = max(abs(float(x)) for x in torch.aminmax(symmetric))
    asymmetry = 2 * max(abs(float(x)) for x in torch.aminmax(value - symmetric))
    if asymmetry > math.sqrt(torch.finfo(value.dtype).eps) * scale:
        raise ValueError(f"{name} must be symmetric, got |X - X^T| up to {asymmetry:.3e}")
    _, info = torch.linalg.cholesky_ex(symmetric)
    failed = info != 0
    if bool(failed.any()):
        where = ""
        if info.dim():
            index = tuple(int(i) for i in failed.nonzero()[0])
            where = f" (the first at batch/time index {index})"
        raise ValueError(
            f"{name} must be positive definite; {int(failed.sum())} of its {info.numel()} "
            f"matrices are not{where}"
        )


def _symmetrize(x: Tensor) -> Tensor:
    return 0.5 * (x + x.mT)


def _broadcast_batch(tensors: Sequence[Tensor], event_ndim: int) -> list[Tensor]:
    """Expand the batch dimensions (all but the last ``event_ndim``) to a common shape."""
    shape = torch.broadcast_shapes(*(x.shape[: x.dim() - event_ndim] for x in tensors))
    return [x.expand(*shape, *x.shape[x.dim() - event_ndim :]) for x in tensors]


def _cat_time(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate ``[..., n, r, c]`` tensors along time (dim ``-3``), broadcasting the rest."""
    shape = torch.broadcast_shapes(*((*x.shape[:-3], 1, *x.shape[-2:]) for x in tensors))
    return torch.cat([x.expand(*shape[:-3], x.shape[-3], *shape[-2:]) for x in tensors], dim=-3)


def _stack_time(tensors: Sequence[Tensor]) -> Tensor:
    """Stack ``[..., r, c]`` tensors into ``[..., n, r, c]``, broadcasting them."""
    shape = torch.broadcast_shapes(*(x.shape for x in tensors))
    return torch.stack([x.expand(shape) for x in tensors], dim=-3)


def _prepare(
    observations: Tensor,
    transition_matrix: Tensor,
    transition_offset: Tensor,
    transition_covariance: Tensor,
    observation_matrix: Tensor,
    observation_covariance: Tensor,
    initial_mean: Tensor,
    initial_covariance: Tensor,
) -> _Model:
    check_tensor("observations", observations, min_dim=2)
    T, L = observations.shape[-2:]
    if T == 0:
        raise ValueError(
            f"observations must hold at least one time step (T >= 1), got shape {tuple(observations.shape)}"
        )
    if L == 0:
        raise ValueError(
            f"observations must have a non-empty last dimension L, got shape {tuple(observations.shape)}"
        )
    _check_finite("observations", observations)
    check_tensor("transition_matrix", transition_matrix, min_dim=2)
    D = transition_matrix.shape[-1]
    if D == 0 or transition_matrix.shape[-2] != D:
        raise ValueError(
            "transition_matrix must be square, [D, D] or [..., T, D, D] with D >= 1, got shape "
            f"{tuple(transition_matrix.shape)}"
        )
    args = {
        "transition_matrix": (transition_matrix, (D, D), "D, D", T),
        "transition_offset": (transition_offset, (D,), "D", T),
        "transition_covariance": (transition_covariance, (D, D), "D, D", T),
        "observation_matrix": (observation_matrix, (L, D), "L, D", T),
        "observation_covariance": (observation_covariance, (L, L), "L, L", T),
        "initial_mean": (initial_mean, (D,), "D", None),
        "initial_covariance": (initial_covariance, (D, D), "D, D", None),
    }
    batches = {"observations": tuple(observations.shape[:-2])}
    for name, (value, event_shape, symbols, time_steps) in args.items():
        batches[name] = _check_argument(name, value, observations, event_shape, symbols, time_steps)
    dtype = observations.dtype
    for value, *_ in args.values():
        dtype = torch.promote_types(dtype, value.dtype)
    observations = observations.to(dtype)
    values = {name: value.to(dtype) for name, (value, *_) in args.items()}
    symmetric = {}
    for name in ("transition_covariance", "observation_covariance", "initial_covariance"):
        symmetric[name] = _symmetrize(values[name])
        _check_positive_definite(name, values[name], symmetric[name])
    try:
        batch_shape = tuple(torch.broadcast_shapes(*batches.values()))
    except RuntimeError as error:
        listing = ", ".join(f"{name} {shape}" for name, shape in batches.items())
        raise ValueError(
            f"the batch dimensions of the inputs do not broadcast: {listing}"
        ) from error
    covariance_names = (
        "transition_matrix",
        "transition_covariance",
        "observation_matrix",
        "observation_covariance",
        "initial_covariance",
    )
    parameter_batch_shape = tuple(torch.broadcast_shapes(*(batches[n] for n in covariance_names)))
    layout = _Layout(batch_shape, parameter_batch_shape)

    def matrix(x: Tensor) -> Tensor:  # [..., T|1, r, c] in the kept layout
        return layout.parameter(x if x.dim() > 2 else x.unsqueeze(0), 3)

    offset = values["transition_offset"]
    offset = offset if offset.dim() > 1 else offset.unsqueeze(0)
    return _Model(
        z=layout.to_columns(observations, 2),
        A=matrix(values["transition_matrix"]),
        c=layout.to_columns(offset, 2),
        Q=matrix(symmetric["transition_covariance"]),
        H=matrix(values["observation_matrix"]),
        R=matrix(symmetric["observation_covariance"]),
        m0=layout.to_columns(values["initial_mean"], 1),
        P0=layout.parameter(symmetric["initial_covariance"], 2),
        layout=layout,
    )


# --------------------------------------------------------------------------------------------
# Sequential filter: the textbook recursion, one time step per iteration.
# --------------------------------------------------------------------------------------------


def _at(x: Tensor, t: int) -> Tensor:
    """Time step ``t`` of a ``[..., T|1, r, c]`` parameter."""
    return x[..., 0 if x.shape[-3] == 1 else t, :, :]


def _gaussian_log_density_terms(cholesky_S: Tensor, residual: Tensor) -> tuple[Tensor, Tensor]:
    """``(|S^{-1/2} r|^2 summed over L and time, log|S|^{1/2} summed over time)`` per column."""
    whitened = torch.linalg.solve_triangular(cholesky_S, residual, upper=False)
    return whitened.square().sum(-2), cholesky_S.diagonal(dim1=-2, dim2=-1).log().sum(-1)


def _sequential_filter(model: _Model) -> tuple[Tensor, ...]:
    z, A, c, Q, H, R = model.z, model.A, model.c, model.Q, model.H, model.R
    T, L = z.shape[-3], z.shape[-2]
    D = A.shape[-1]
    I = torch.eye(D, dtype=z.dtype, device=z.device)
    m, P = model.m0, model.P0
    terms, means_bar, covariances_bar, means, covariances = [], [], [], [], []
    for t in range(T):
        A_t, c_t, Q_t, H_t, R_t = _at(A, t), _at(c, t), _at(Q, t), _at(H, t), _at(R, t)
        # predict
        m_bar = A_t @ m + c_t
        P_bar = _symmetrize(A_t @ P @ A_t.mT + Q_t)
        # update
        S = H_t @ P_bar @ H_t.mT + R_t
        cholesky_S = torch.linalg.cholesky(S)
        K = torch.cholesky_solve(H_t @ P_bar, cholesky_S).mT  # P̄ Hᵀ S⁻¹
        residual = z[..., t, :, :] - H_t @ m_bar
        quadratic, half_log_det = _gaussian_log_density_terms(cholesky_S, residual)
        terms.append(-0.5 * quadratic - half_log_det.unsqueeze(-1))
        m = m_bar + K @ residual
        I_KH = I - K @ H_t
        P = _symmetrize(I_KH @ P_bar @ I_KH.mT + K @ R_t @ K.mT)
        means_bar.append(m_bar)
        covariances_bar.append(P_bar)
        means.append(m)
        covariances.append(P)
    # Summed once at the end (pairwise summation), not accumulated step by step.
    log_likelihood = torch.stack(torch.broadcast_tensors(*terms)).sum(0)
    log_likelihood = log_likelihood - 0.5 * T * L * math.log(2 * math.pi)
    return (
        log_likelihood,
        _stack_time(means_bar),
        _stack_time(covariances_bar),
        _stack_time(means),
        _stack_time(covariances),
    )


# --------------------------------------------------------------------------------------------
# Parallel filter: associative scans over time.
# --------------------------------------------------------------------------------------------


class _Element(NamedTuple):
    """Observation-free part of a Särkkä & García-Fernández (2021) filtering element.

    Each tensor is ``[..., n, ., .]`` with time at dim ``-3``. ``W`` is an optional square-root
    factor ``J = W^T W`` (``[..., n, L, D]``), known for the elements built from the model; the
    operator then factors an ``L x L`` matrix instead of a ``D x D`` one.
    """

    A: Tensor
    C: Tensor
    J: Tensor
    W: Tensor | None = None

    def select(self, index: slice) -> _Element:
        """The elements at ``index`` along time, copied once into contiguous memory (a strided
        slice would otherwise be copied by every batched matrix product that reads it)."""
        W = None if self.W is None else self.W[..., index, :, :].contiguous()
        return _Element(*(x[..., index, :, :].contiguous() for x in self[:3]), W)


def _combine(earlier: _Element, later: _Element) -> _Element:
    """The associative operator on (𝒜, C, J), ``earlier`` (``i``) acting before ``later`` (``j``):

    ``𝒜_ij = 𝒜_j (I + C_i J_j)⁻¹ 𝒜_i``, ``C_ij = 𝒜_j (I + C_i J_j)⁻¹ C_i 𝒜_jᵀ + C_j``,
    ``J_ij = 𝒜_iᵀ (I + J_j C_i)⁻¹ J_j 𝒜_i + J_i``. With a factor ``J_j = Wᵀ W`` the inverse is
    ``(I + C_i Wᵀ W)⁻¹ = I - C_i Zᵀ Z`` with ``Z = N⁻¹ W``, ``N Nᵀ = I + W C_i Wᵀ`` (Woodbury; a
    Cholesky factorization of an ``L x L`` matrix ``>= I``), and ``(I + J_j C_i)⁻¹ J_j = Zᵀ Z``;
    otherwise one LU factorization of ``I + C_i J_j`` serves both solves.
    """
    A_i, C_i, J_i, _ = earlier
    A_j, C_j, J_j, W_j = later
    if W_j is not None:
        WC = W_j @ C_i
        I = torch.eye(W_j.shape[-2], dtype=C_i.dtype, device=C_i.device)
        N = torch.linalg.cholesky(I + WC @ W_j.mT)
        Z = torch.linalg.solve_triangular(N, W_j, upper=False)
        ZC, ZA = Z @ C_i, Z @ A_i
        G_A = A_i - ZC.mT @ ZA  # (I + C_i J_j)⁻¹ 𝒜_i
        G_C = C_i - ZC.mT @ ZC  # (I + C_i J_j)⁻¹ C_i
        J = ZA.mT @ ZA + J_i
    else:
        D = A_i.shape[-1]
        I = torch.eye(D, dtype=C_i.dtype, device=C_i.device)
        G = I + C_i @ J_j  # its transpose is I + J_j C_i
        LU, pivots = torch.linalg.lu_factor(G)
        shape = torch.broadcast_shapes(A_i.shape, C_i.shape, G.shape)
        G_A, G_C = torch.linalg.lu_solve(
            LU, pivots, torch.cat([A_i.expand(shape), C_i.expand(shape)], dim=-1)
        ).split(D, dim=-1)
        G_J = torch.linalg.lu_solve(LU, pivots, J_j.expand(G.shape), adjoint=True)
        J = A_i.mT @ G_J @ A_i + J_i
    return _Element(A_j @ G_A, A_j @ G_C @ A_j.mT + C_j, J)


def _extend(P: Tensor, element: _Element) -> Tensor:
    """Filtered covariance after one more element: the ``C`` part of ``(0, P, 0) ⊗ element``.

    Prefixes that start at ``e_1`` have vanishing 𝒜 and J parts (as ``e_1`` has), so the operator
    reduces to ``𝒜 (I + P J)⁻¹ P 𝒜ᵀ + C``; with ``J = Wᵀ W`` this is a Kalman update,
    ``(I + P J)⁻¹ P = P - Yᵀ Y``, ``Y = N⁻¹ W P``, ``N Nᵀ = I + W P Wᵀ``.
    """
    A, C, J, W = element
    if W is not None:
        WP = W @ P
        I = torch.eye(W.shape[-2], dtype=P.dtype, device=P.device)
        N = torch.linalg.cholesky(I + WP @ W.mT)
        Y = torch.linalg.solve_triangular(N, WP, upper=False)
        X = P - Y.mT @ Y
    else:
        I = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device)
        LU, pivots = torch.linalg.lu_factor(I + P @ J)
        X = torch.linalg.lu_solve(LU, pivots, P.expand(LU.shape))
    return A @ X @ A.mT + C


def _filtered_covariance_scan(P_1: Tensor, elements: _Element) -> Tensor:
    """All filtered covariances ``P_t``: the ``C`` parts of the prefixes ``e_1 ⊗ … ⊗ e_t``.

    ``P_1`` (``[..., 1, D, D]``) stands for ``e_1 = (0, P_1, 0)``; ``elements`` holds
    ``e_2, …, e_T``. The recursive odd/even all-prefix scan (Blelloch 1990; as
    ``jax.lax.associative_scan``): combine the pairs ``(e_1 ⊗ e_2), (e_3 ⊗ e_4), …``, scan that
    half-length sequence — the prefixes ending at even ``t`` — and extend each by the next element
    for the prefixes ending at odd ``t``. Every prefix has the form ``(0, P, 0)``, so only the
    up-sweep pairs need the full operator; the rest are cheaper :func:`_extend` calls. About
    ``T`` operator and ``T`` extension evaluations in ``2 log2 T`` batched rounds.
    """
    T = 1 + elements.A.shape[-3]
    if T == 1:
        return P_1
    P_2 = _extend(P_1, elements.select(slice(0, 1)))
    pairs = (T - 2) // 2  # (e_3, e_4), (e_5, e_6), ...
    if pairs:
        reduced = _combine(
            elements.select(slice(1, 1 + 2 * pairs, 2)), elements.select(slice(2, 2 + 2 * pairs, 2))
        )
        P_even_t = _filtered_covariance_scan(P_2, reduced)  # t = 2, 4, 6, ...
    else:
        P_even_t = P_2
    count = (T - 1) // 2  # t = 3, 5, ...
    P_odd_t = _extend(P_even_t[..., :count, :, :], elements.select(slice(1, None, 2)))
    return _interleave(P_1, P_odd_t, P_even_t, T)


def _filtered_covariance_doubling(P_1: Tensor, element: _Element, T: int) -> Tensor:
    """All ``P_t`` when ``e_2 = … = e_T = g`` (time-invariant :math:`A, Q, H, R`).

    The prefixes ``s_t = e_1 ⊗ g^{⊗(t-1)}`` double in number per round: ``s_{t+n} = s_t ⊗ g^{⊗n}``
    for ``t <= n``, then ``g^{⊗2n} = g^{⊗n} ⊗ g^{⊗n}`` (repeated squaring, the doubling algorithm
    for the Riccati recursion): ``T - 1`` extensions and ``log2 T`` squarings in ``log2 T``
    batched rounds, about half the work of the general scan for the same prefixes.
    """
    prefixes, power = P_1, element
    while True:
        n = prefixes.shape[-3]
        new = _extend(prefixes[..., : min(n, T - n), :, :], power)
        prefixes = _cat_time([prefixes, new])
        if prefixes.shape[-3] == T:
            return prefixes
        power = _combine(power, power)


def _affine_prefix_scan(F: Tensor, u: Tensor) -> Tensor:
    """All prefixes of the affine maps ``x -> F_t x + u_t`` applied to ``0``, along dim ``-3``.

    The odd/even scan for the composition ``(F_j, u_j) ∘ (F_i, u_i) = (F_j F_i, F_j u_i + u_j)``,
    returning only the offsets of the prefixes (``F_1 = 0`` makes their linear parts vanish), so
    the linear parts are multiplied only for the pairs of the up-sweep.
    """
    T = u.shape[-3]
    if T < 2:
        return u
    pairs = 2 * (T // 2)
    F_i, F_j = F[..., 0:pairs:2, :, :].contiguous(), F[..., 1:pairs:2, :, :].contiguous()
    u_i, u_j = u[..., 0:pairs:2, :, :].contiguous(), u[..., 1:pairs:2, :, :]
    odd = _affine_prefix_scan(F_j @ F_i, torch.add(F_j @ u_i, u_j))
    count = (T - 1) // 2
    even = torch.add(F[..., 2::2, :, :] @ odd[..., :count, :, :], u[..., 2::2, :, :])
    return _interleave(u[..., :1, :, :], even, odd, T)


def _interleave(first: Tensor, even: Tensor, odd: Tensor, T: int) -> Tensor:
    """``[first, o_0, e_0, o_1, e_1, …]`` of length ``T`` along dim ``-3``, written in place.

    ``first`` and ``even`` fill the even (0-based) positions, ``odd`` the odd ones.
    """
    shape = torch.broadcast_shapes(*((*x.shape[:-3], 1, *x.shape[-2:]) for x in (first, even, odd)))
    out = odd.new_empty(*shape[:-3], T, *shape[-2:])
    out[..., :1, :, :] = first
    out[..., 2::2, :, :] = even
    out[..., 1::2, :, :] = odd
    return out


def _time_tail(x: Tensor, T: int) -> Tensor:
    """Steps ``2..T`` of a ``[..., T|1, r, c]`` parameter (expanded when shared over time)."""
    if x.shape[-3] == 1:
        return x.expand(*x.shape[:-3], T - 1, *x.shape[-2:])
    return x[..., 1:, :, :]


def _parallel_filter(model: _Model) -> tuple[Tensor, ...]:
    z, A, c, Q, H, R, m0, P0 = model[:8]
    T, L = z.shape[-3], z.shape[-2]
    D = A.shape[-1]
    I = torch.eye(D, dtype=z.dtype, device=z.device)

    # e_1 = (0, P_1, 0): one ordinary predict/update step from (m_0, P_0).
    A_1, Q_1, H_1, R_1 = A[..., :1, :, :], Q[..., :1, :, :], H[..., :1, :, :], R[..., :1, :, :]
    P_bar_1 = _symmetrize(A_1 @ P0.unsqueeze(-3) @ A_1.mT + Q_1)
    cholesky_S_1 = torch.linalg.cholesky(H_1 @ P_bar_1 @ H_1.mT + R_1)
    K_1 = torch.cholesky_solve(H_1 @ P_bar_1, cholesky_S_1).mT
    I_KH_1 = I - K_1 @ H_1
    P_1 = _symmetrize(I_KH_1 @ P_bar_1 @ I_KH_1.mT + K_1 @ R_1 @ K_1.mT)
    if T == 1:
        P = P_1
    else:
        # e_t, t >= 2 (eq. 10-12): with Σ = H Q Hᵀ + R = N Nᵀ, Y = N⁻¹ H Q and W = N⁻¹ H A,
        # 𝒜 = (I - Γ H) A = A - Yᵀ W, C = (I - Γ H) Q = Q - Yᵀ Y and J = Wᵀ W.
        cholesky_Sigma = torch.linalg.cholesky(H @ Q @ H.mT + R)
        Y, W = torch.linalg.solve_triangular(
            cholesky_Sigma, torch.cat(_broadcast_batch([H @ Q, H @ A], 2), dim=-1), upper=False
        ).split(D, dim=-1)
        generic = _Element(A - Y.mT @ W, Q - Y.mT @ Y, W.mT @ W, W)
        if all(x.shape[-3] == 1 for x in (A, Q, H, R)):  # computed once, shared over time
            P = _filtered_covariance_doubling(P_1, generic, T)
        else:
            P = _filtered_covariance_scan(P_1, _Element(*(_time_tail(x, T) for x in generic)))
        P = _symmetrize(P)  # symmetric to rounding inside the scans; exactly so for the output

    # Every step's prediction and innovation at once; with S_t = M_t M_tᵀ and one triangular
    # solve [B_t, V_t, ẑ_t] = M_t⁻¹ [H P̄_t, H, z_t], the gain is K_t = B_tᵀ M_t⁻¹.
    P_bar = _symmetrize(A @ _cat_time([P0.unsqueeze(-3), P[..., :-1, :, :]]) @ A.mT + Q)
    cholesky_S = torch.linalg.cholesky(H @ P_bar @ H.mT + R)
    B, V, z_hat = torch.linalg.solve_triangular(
        cholesky_S, torch.cat(_broadcast_batch([H @ P_bar, H, z], 2), dim=-1), upper=False
    ).split([D, D, z.shape[-1]], dim=-1)

    # Means: m_t = F_t m_{t-1} + u_t with F_t = (I - K_t H) A = A - Bᵀ V A and
    # u_t = (I - K_t H) c + K_t z_t = c + Bᵀ (ẑ - V c), as a second prefix scan.
    F = A - B.mT @ (V @ A)
    u = torch.add(c, B.mT @ torch.sub(z_hat, V @ c))
    u_1 = F[..., :1, :, :] @ m0.unsqueeze(-3) + u[..., :1, :, :]
    F = _cat_time([torch.zeros_like(F[..., :1, :, :]), F[..., 1:, :, :]])
    m = _affine_prefix_scan(F, _cat_time([u_1, u[..., 1:, :, :]]))

    # Log-likelihood: the whitened innovations M_t⁻¹ (z_t - H m̄_t) = ẑ_t - V_t m̄_t, all at once.
    m_bar = A @ _cat_time([m0.unsqueeze(-3), m[..., :-1, :, :]]) + c
    whitened = torch.sub(z_hat, V @ m_bar)
    half_log_det = cholesky_S.diagonal(dim1=-2, dim2=-1).log().sum((-2, -1))
    log_likelihood = (
        -0.5 * whitened.square().sum((-3, -2))
        - half_log_det.unsqueeze(-1)
        - 0.5 * T * L * math.log(2 * math.pi)
    )
    return log_likelihood, m_bar, P_bar, m, P
