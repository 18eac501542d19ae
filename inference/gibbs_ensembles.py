r"""Generalized Gibbs ensembles: entropic self-labelling under user-declared linear constraints.

Salazar (2021) reads self-labelling as isochoric *heating* (Sec. II.A): the ensemble
:math:`q_{ij}` over samples :math:`i \in \{1..N\}` and labels :math:`j \in \{1..K\}` relaxes to the
maximum-entropy state compatible with its constraints. With the entropy, internal energy and
linear constraints of eqs. (6)–(8),

.. math::

    S[q] = -\sum_{ij} q_{ij} \log q_{ij}, \qquad
    U = \sum_{ij} \varepsilon_{ij} q_{ij}, \qquad
    \sum_{ij} f_{mj} q_{ij} = c_m, \quad \sum_{ij} g_{li} q_{ij} = d_l,

the stationarity condition (9) gives the generalized Gibbs ensemble (GGE) of eq. (10),

.. math::

    q^*_{ij} = \frac{1}{Z} \exp\Big(-\beta \varepsilon_{ij} - \sum_m a_m f_{mj}
        - \sum_l b_l g_{li}\Big),

with one Lagrange multiplier per constraint. This module allows any feature
:math:`\phi_m(i, j)` (a label feature :math:`f_{mj}`, a sample feature :math:`g_{li}`, or one that
depends on both), and treats the two marginal families separately because they are the common
case: the full problem solved by :func:`generalized_gibbs_ensemble` is

.. math::

    \max_{q \ge 0}\; S[q] - \beta \langle \varepsilon, q \rangle
    \quad\text{s.t.}\quad \sum_{ij} q_{ij} = 1,\;
    \sum_j q_{ij} = r_i \ (\text{optional}),\;
    \sum_i q_{ij} = c_j \ (\text{optional}),\;
    \sum_{ij} \phi_m(i, j)\, q_{ij} = t_m,

whose solution is

.. math::

    \log q^*_{ij} = -\beta \varepsilon_{ij} - \sum_m a_m \phi_m(i, j) - u_i - v_j - \log Z,

with a row (sample) potential :math:`u_i` and a column (label) potential :math:`v_j` present only
when that marginal is constrained. Its multipliers minimize the convex dual

.. math::

    D(u, v, a) = \log \sum_{ij} e^{-\beta\varepsilon_{ij} - \sum_m a_m \phi_{mij} - u_i - v_j}
        + \sum_i u_i r_i + \sum_j v_j c_j + \sum_m a_m t_m,
    \qquad \nabla_{a} D = t - \mathbb E_q[\phi], \quad
    \nabla^2_{a} D = \operatorname{Cov}_q[\phi].

**The Sinkhorn-Knopp class is the special case** (Sec. IV.A, eqs. 20–24): label features
:math:`f_{mj} = \delta_{mj}` with :math:`c_m = 1/K` and sample features :math:`g_{li} =
\delta_{li}` with :math:`d_l = 1/N` are exactly the two uniform marginals (22), and the GGE (10)
becomes eq. (24), :math:`q^*_{ij} = C \exp(-\beta\varepsilon_{ij} - a_j - b_i)`, the plan of
:func:`thermossl.inference.sinkhorn.sinkhorn_knopp`. Dropping the label marginal leaves the plain
Gibbs ensemble of each sample, :math:`q_{ij} = r_i\, \mathrm{softmax}_j(-\beta\varepsilon_{ij})`,
whose :math:`\beta \to \infty` limit is the degenerate (k-means, DeepCluster) class of Sec. IV.B and
whose :math:`\beta \to 0` limit is the uniform ensemble :math:`1/(NK)` of the adiabatic class,
Sec. IV.C. Other "GGE classes" (Sec. V) are new constraint sets: a non-uniform label prior, a
confidence floor on labelled samples, a moment of any score.

The solver starts with block-coordinate descent on :math:`D`, i.e. cyclic KL (Bregman)
projections on the constraint sets: exact log-domain Sinkhorn scalings for the :math:`v` and
:math:`u` blocks (in SwAV's order: labels, then samples) and damped Newton steps for the :math:`a`
block (Jacobi-scaled covariance, a 10-nat trust region on the log-weights, Armijo backtracking on
the dual). These sweeps converge linearly, at a rate that degrades towards one when the blocks
are strongly coupled (large :math:`\beta`, confidence constraints that fight the energies: many
thousand sweeps). As soon as the observed rate predicts more than a few further sweeps, the solver
switches to damped Newton steps on all multipliers jointly (Newton–Sinkhorn, ref. 4), in float64:
the Hessian of the dual in :math:`(u, v, a)` is the second moment of the indicators and features
under :math:`q`, whose sample block is diagonal and is eliminated exactly, leaving a dense system
of size :math:`K - 1 + M` (one label potential is fixed by the gauge :math:`u + \gamma,\ v -
\gamma`); the same trust region and Armijo search keep the steps safe, and convergence is
quadratic near the solution. Problems whose dense system exceeds 1024 unknowns keep the sweeps.

References:

1. C. Salazar (2021), "Self-supervised learning as a thermodynamic process" (the heating process,
   Sec. II.A, eqs. 6–10; the Sinkhorn-Knopp, degenerate and adiabatic classes, Sec. IV, eqs.
   20–24; new GGE classes, Sec. V).
2. M. Cuturi (2013), "Sinkhorn distances: lightspeed computation of optimal transport", NeurIPS.
3. I. Csiszár (1975), "I-divergence geometry of probability distributions and minimization
   problems", Annals of Probability 3(1) (cyclic I-projections onto linear families).
4. C. Brauer, C. Clason, D. Lorenz, B. Wirth (2017), "A Sinkhorn-Newton method for entropic
   optimal transport", arXiv:1710.06635 (Newton steps on the joint dual of the scalings).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from thermossl._validation import (
    check_finite,
    check_positive,
    check_positive_integer,
    check_tensor,
)

__all__ = ["GeneralizedGibbsEnsemble", "LinearConstraint", "generalized_gibbs_ensemble"]

#: Armijo sufficient-decrease constant of the backtracking line search on the dual.
_ARMIJO = 1e-4
#: Most step halvings the line search tries before it declares the block solved to rounding.
_MAX_HALVINGS = 40
#: Most Newton steps on the feature multipliers within one sweep.
_NEWTON_STEPS_PER_SWEEP = 20
#: Largest change of any log-weight one Newton step may make (a trust region, in nats): far from
#: the solution the quadratic model of the log-partition function is poor (a feature with mass
#: 1e-20 asks for a step of 1e16 where 46 nats would do), and the dual is near-linear there.
_MAX_LOG_CHANGE = 10.0
#: Largest dense Newton system (free label potentials plus feature multipliers) the joint solver
#: builds; beyond it the solver runs the block-coordinate sweeps only.
_JOINT_MAX_SIZE = 1024
#: The block sweeps go on while their observed linear rate predicts at most this many more
#: sweeps to the tolerance (a sweep costs a fraction of a joint Newton step); past it, or once a
#: sweep stops contracting, joint Newton steps take over.
_SWEEPS_AHEAD = 10


class LinearConstraint(NamedTuple):
    r"""One linear constraint :math:`\sum_{ij} \phi(i, j)\, q_{ij} = t` on the ensemble (eq. 8).

    :ivar torch.Tensor features: :math:`\phi(i, j)`, any shape that broadcasts to the energies'
        ``[N, K]``: ``[K]`` for a label feature :math:`f_j`, ``[N, 1]`` for a sample feature
        :math:`g_i`, ``[N, K]`` for a feature of both.
    :ivar target: :math:`t`, the required expectation :math:`\mathbb E_q[\phi]` (a float or a 0-d
        tensor).

    .. warning:: A 1-d ``features`` is always a *label* feature (it broadcasts along the last
        dimension); write a sample feature as a column ``g[:, None]``.
    """

    features: Tensor
    target: float | Tensor


class GeneralizedGibbsEnsemble(NamedTuple):
    r"""What :func:`generalized_gibbs_ensemble` returns.

    The fields reconstruct the plan exactly (to rounding):
    ``plan.log() == -beta * energies - sum_m multipliers[m] * features_m
    - row_potential[:, None] - col_potential[None, :] - log_partition``.

    :ivar torch.Tensor plan: ``[N, K]`` the ensemble :math:`q^*`, summing to one.
    :ivar torch.Tensor multipliers: ``[M]`` the multipliers :math:`a_m` of the declared
        constraints, in their order (empty when there are none).
    :ivar torch.Tensor row_potential: ``[N]`` the sample potentials :math:`u_i` (:math:`b_i` of
        eq. 24); zero when the row marginal is unconstrained.
    :ivar torch.Tensor col_potential: ``[K]`` the label potentials :math:`v_j` (:math:`a_j` of
        eq. 24); zero when the column marginal is unconstrained.
    :ivar torch.Tensor log_partition: ``[]`` :math:`\log Z`. With a constrained marginal the split
        of constants between the potentials and :math:`\log Z` is a gauge choice, not unique.
    :ivar int iterations: iterations run: block sweeps (one sweep = label scaling, sample
        scaling, Newton block on the features) plus joint Newton steps on all multipliers.
    :ivar float violation: the largest absolute constraint violation of ``plan``, over the
        marginals and :math:`|\mathbb E_q[\phi_m] - t_m|`, each in its own units.
    """

    plan: Tensor
    multipliers: Tensor
    row_potential: Tensor
    col_potential: Tensor
    log_partition: Tensor
    iterations: int
    violation: float


Marginal = Literal["uniform"] | Tensor | None


def generalized_gibbs_ensemble(
    energies: Tensor,
    beta: float,
    constraints: Sequence[LinearConstraint] = (),
    row_marginal: Marginal = "uniform",
    col_marginal: Marginal = "uniform",
    tolerance: float | None = None,
    max_iterations: int = 10_000,
    initial: GeneralizedGibbsEnsemble | None = None,
) -> GeneralizedGibbsEnsemble:
    r"""Maximum-entropy ensemble at inverse temperature :math:`\beta` under linear constraints.

    .. math::

        q^* = \arg\max_{q} S[q] - \beta\langle\varepsilon, q\rangle
        \ \text{ s.t. } \textstyle\sum_{ij} q_{ij} = 1,\ q\mathbf 1 = r,\ q^\top\mathbf 1 = c,\
        \sum_{ij}\phi_{mij} q_{ij} = t_m, \qquad
        \log q^*_{ij} = -\beta\varepsilon_{ij} - \sum_m a_m\phi_{mij} - u_i - v_j - \log Z

    (Salazar 2021, eqs. 8–10; eq. 24 when there are no features and both marginals are
    uniform). Each sweep scales the label marginals, then the sample marginals (log-domain
    Sinkhorn, as :func:`~thermossl.inference.sinkhorn.sinkhorn_knopp`), then takes damped
    Newton steps :math:`a \leftarrow a - \alpha\,\operatorname{Cov}_q[\phi]^{+}(t -
    \mathbb E_q[\phi])` (at most 10 nats of change in any log-weight per step) with Armijo
    backtracking on the dual. Once the sweeps slow down (their linear rate predicts more than 10
    further sweeps), damped Newton steps on all multipliers :math:`(u, v, a)` jointly take over,
    computed in float64 whatever the input dtype, until every constraint holds to
    ``tolerance``. Without features and with both marginals constrained the sweeps are
    Sinkhorn-Knopp's log-domain scalings in the same order, and the plan is
    ``sinkhorn_knopp``'s to the tolerance (whichever steps reach it).

    :param torch.Tensor energies: ``[N, K]`` energies :math:`\varepsilon_{ij}` of sample ``i``
        under label ``j``. Leading batch dimensions are rejected: solve batched problems one by
        one (their multipliers and iteration counts differ).
    :param float beta: inverse temperature :math:`\beta > 0`.
    :param constraints: a sequence of :class:`LinearConstraint` (or ``(features, target)``
        pairs), the features :math:`\phi_m` and their targets :math:`t_m`.
    :param row_marginal: the sample marginal :math:`r_i = \sum_j q_{ij}`: ``"uniform"``
        (default, :math:`1/N`), an ``[N]`` tensor of positive entries summing to one (within
        ``1e-6``; renormalized exactly), or ``None`` to leave it unconstrained.
    :param col_marginal: the label marginal :math:`c_j = \sum_i q_{ij}`, likewise (``[K]``).
        ``None`` drops the transport constraint: with no features each sample then gets its own
        Gibbs ensemble :math:`r_i\,\mathrm{softmax}_j(-\beta\varepsilon_{ij})`.
    :param float tolerance: the largest absolute constraint violation accepted (see
        :attr:`GeneralizedGibbsEnsemble.violation`); by default ``1e-9`` in float64 and
        ``1e-6`` in lower precision, as ``sinkhorn_knopp``.
    :param int max_iterations: cap on the iterations (sweeps plus joint Newton steps); reaching
        it without meeting ``tolerance`` emits a :class:`RuntimeWarning` with the violation
        reached (the usual cause is a set of targets that no positive ensemble satisfies
        jointly).
    :param GeneralizedGibbsEnsemble initial: an earlier result on a problem of the same shape
        (say the previous training step's), whose multipliers and potentials start the solver
        instead of zeros; the potentials of an unconstrained marginal are ignored. Only the
        starting point changes, not the solution.
    :returns: a :class:`GeneralizedGibbsEnsemble` (plan, multipliers, potentials,
        :math:`\log Z`, iterations, violation), in the energies' dtype and device.
    :raises TypeError: if ``energies``, a marginal or a feature is not a floating tensor, a
        constraint is not a ``(features, target)`` pair, or ``initial`` is not a
        :class:`GeneralizedGibbsEnsemble`.
    :raises ValueError: on non-finite inputs, ``beta <= 0``, a feature that does not broadcast
        to ``[N, K]``, a marginal that is not positive or does not sum to one, an ``initial``
        whose fields are not ``[M]``, ``[N]`` and ``[K]``, or a target that no positive ensemble
        with the requested marginals can reach (checked cheaply: the target must lie strictly
        inside the range of :math:`\phi` allowed by the marginals, or equal the value they
        fix).

    .. warning:: The plan sums to one over the whole matrix, like ``sinkhorn_knopp``; per-sample
        label distributions (SwAV's codes) are ``plan / plan.sum(-1, keepdim=True)``. The plan
        is computed without gradient: it is a self-label target, as in SwAV.

    .. warning:: A label feature with a constrained label marginal (or a sample feature with a
        constrained sample marginal) has its expectation fixed by that marginal; its target must
        equal that value, or a :class:`ValueError` is raised. To impose a label prior through
        features, set ``col_marginal=None``.

    Example: a non-uniform label prior :math:`\sum_i q_{i1} = 3/4` as a label feature
    :math:`f_j = \delta_{j1}`, with uniform sample marginals and a free label marginal::

        >>> energies = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.0, 0.0]],
        ...                         dtype=torch.float64)
        >>> prior = LinearConstraint(torch.tensor([1.0, 0.0], dtype=torch.float64), 0.75)
        >>> gge = generalized_gibbs_ensemble(energies, 2.0, [prior], col_marginal=None)
        >>> gge.plan.sum(0)  # label marginal: the declared prior
        tensor([0.7500, 0.2500], dtype=torch.float64)
        >>> gge.plan.sum(1)  # sample marginal: uniform
        tensor([0.2500, 0.2500, 0.2500, 0.2500], dtype=torch.float64)
        >>> gge.multipliers  # a < 0 pulls mass towards label 0
        tensor([-1.5297], dtype=torch.float64)
    """
    check_tensor("energies", energies, min_dim=2)
    if energies.dim() != 2:
        raise ValueError(
            "energies must have shape [N, K] (batched problems are not supported: solve each "
            f"one separately), got shape {tuple(energies.shape)}"
        )
    check_finite("energies", energies)
    check_positive("beta", beta)
    beta = float(beta)
    num_samples, num_labels = energies.shape
    if tolerance is None:
        tolerance = 1e-9 if energies.dtype == torch.float64 else 1e-6
    check_positive("tolerance", tolerance)
    check_positive_integer("max_iterations", max_iterations)
    r = _marginal("row_marginal", row_marginal, energies, num_samples)
    c = _marginal("col_marginal", col_marginal, energies, num_labels)
    phi, t = _features(constraints, energies, r, c, tolerance)
    _check_initial(initial, num_samples, num_labels, phi.shape[0])

    with torch.no_grad():
        return _solve(energies.detach(), beta, phi, t, r, c, tolerance, max_iterations, initial)


def _solve(
    energies: Tensor,
    beta: float,
    phi: Tensor,
    t: Tensor,
    r: Tensor | None,
    c: Tensor | None,
    tolerance: float,
    max_iterations: int,
    initial: GeneralizedGibbsEnsemble | None,
) -> GeneralizedGibbsEnsemble:
    """Block sweeps while they converge fast, then joint Newton steps on the dual.

    ``phi`` is ``[M, N, K]`` and ``t`` is ``[M]``, in the energies' dtype. The sweeps run in
    that dtype; the switch to Newton moves every tensor to float64 and rebuilds ``log_q`` from
    the multipliers there.
    """
    num_samples, num_labels = energies.shape
    dtype = energies.dtype
    dense_size = phi.shape[0] + (num_labels - 1 if c is not None else 0)
    # without features or label marginal one sweep is exact; past the size cap, sweeps only
    joint = 0 < dense_size <= _JOINT_MAX_SIZE
    u = energies.new_zeros(num_samples)
    v = energies.new_zeros(num_labels)
    a = energies.new_zeros(phi.shape[0])
    if initial is not None:
        u = initial.row_potential.to(energies) if r is not None else u
        v = initial.col_potential.to(energies) if c is not None else v
        a = initial.multipliers.to(energies)
    log_q, log_z = _log_plan(energies, beta, phi, u, v, a)
    sweeps = 0
    newton = False
    previous = math.inf
    while True:
        sweeps += 1
        step = _joint_newton_step(log_q, log_z, phi, t, r, c) if newton else None
        if step is not None:
            log_q, log_z, du, dv, da = step
            u, v, a = u + du, v + dv, a + da
        else:  # a block sweep: label scaling, sample scaling, Newton steps on the features
            if c is not None:
                shift = torch.logsumexp(log_q, dim=-2) - c.log()
                log_q = log_q - shift
                v = v + shift
            if r is not None:
                shift = torch.logsumexp(log_q, dim=-1) - r.log()
                log_q = log_q - shift.unsqueeze(-1)
                u = u + shift
            if phi.shape[0] > 0:
                log_q, a, log_z = _newton_block(log_q, a, log_z, phi, t, tolerance)
        violation = _violation(log_q.exp(), phi, t, r, c)
        if violation <= tolerance:
            break
        if sweeps >= max_iterations:
            warnings.warn(
                f"generalized_gibbs_ensemble did not reach tolerance {tolerance:.1e} in "
                f"{max_iterations} iterations (largest constraint violation {violation:.2e}); "
                "raise max_iterations, lower beta, or check that the targets are jointly feasible",
                RuntimeWarning,
                stacklevel=3,
            )
            break
        if joint and not newton and sweeps > 1:
            rate = violation / previous
            newton = rate >= 1 or math.log(tolerance / violation) < _SWEEPS_AHEAD * math.log(rate)
            if newton:  # the joint solver works in float64 whatever the input precision
                energies, phi, t, u, v, a = (x.double() for x in (energies, phi, t, u, v, a))
                r = None if r is None else r.double()
                c = None if c is None else c.double()
                log_q, log_z = _log_plan(energies, beta, phi, u, v, a)
        previous = violation
    plan = log_q.exp().to(dtype)
    if plan.dtype != log_q.dtype:  # report the violation of the plan actually returned
        violation = _violation(plan.to(log_q.dtype), phi, t, r, c)
    return GeneralizedGibbsEnsemble(
        plan, a.to(dtype), u.to(dtype), v.to(dtype), log_z.to(dtype), sweeps, violation
    )


def _log_plan(
    energies: Tensor, beta: float, phi: Tensor, u: Tensor, v: Tensor, a: Tensor
) -> tuple[Tensor, Tensor]:
    r"""The normalized log-plan of eq. (10) at the given multipliers, and its :math:`\log Z`."""
    log_q = -beta * energies - u[:, None] - v[None, :]
    if phi.shape[0] > 0:
        log_q = log_q - torch.einsum("m,mnk->nk", a, phi)
    log_z = torch.logsumexp(log_q, dim=(-2, -1))
    return log_q - log_z, log_z


def _joint_newton_step(
    log_q: Tensor, log_z: Tensor, phi: Tensor, t: Tensor, r: Tensor | None, c: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None:
    r"""One damped Newton step on the whole dual; ``None`` if it finds no descent.

    The Newton system is that of the unnormalized dual :math:`F(w) = \sum_{ij} e^{-\beta
    \varepsilon_{ij} - w\cdot T_{ij}} + w\cdot\tau` over all multipliers :math:`w = (u, v, a)`
    with statistics :math:`T_{ij}` (row indicators, column indicators, features) and targets
    :math:`\tau = (r, c, t)`, whose Hessian :math:`\sum_{ij} q_{ij} T_{ij} T_{ij}^\top` has a
    diagonal row block. Without a row marginal a single normalization multiplier :math:`z`
    (statistic 1, target 1) takes the place of :math:`u`, as one row spanning the whole matrix.
    The row block is eliminated exactly (its Schur complement is the within-row covariance
    :math:`\sum_i \rho_i \operatorname{Cov}_{q_{i\cdot}/\rho_i}[T]` of the label indicators
    and features); the gauge :math:`u + \gamma, v - \gamma` is fixed by keeping :math:`v_0`;
    the remaining ``K - 1 + M`` system is solved by :func:`_pseudo_solve`. At a normalized
    ``log_q`` the gradients of :math:`F` and of :math:`D` agree, so the direction descends on
    :math:`D`, on which the Armijo search runs (after the 10-nat trust region of the block
    solver); each accepted step is renormalized, the exact minimization of :math:`F` over the
    normalization.
    """
    num_features = phi.shape[0]
    num_samples, num_labels = log_q.shape
    q = log_q.exp()
    if r is not None:  # one group per row: eliminate u
        rho = q.sum(-1)
        group_labels = q  # [G, K]: mass of each group on each label
        b_group = rho - r
        phi_bar = (phi * q).sum(-1) / rho  # [M, G]
        centred = phi - phi_bar[..., None]
        group_target = r
    else:  # one group spanning the matrix: eliminate the normalization z
        rho = q.sum().reshape(1)
        group_labels = q.sum(-2, keepdim=True)
        b_group = rho - 1
        phi_bar = (phi * q).sum((-2, -1)).unsqueeze(-1) / rho  # [M, 1]
        centred = phi - phi_bar[..., None]
        group_target = rho.new_ones(1)
    mean = (phi * q).sum((-2, -1))
    centred_flat = centred.reshape(num_features, num_samples * num_labels)
    s_aa = (centred_flat * q.reshape(1, -1)) @ centred_flat.T
    rhs_a = (mean - t) - phi_bar @ b_group
    if c is not None:  # v_0 stays fixed (the gauge u + gamma, v - gamma)
        kappa = q.sum(-2)
        # within-group covariance of the label indicators: a Laplacian (rows sum to zero), whose
        # diagonal is rebuilt from the off-diagonal to avoid cancellation at large beta
        s_vv = -(group_labels.T @ (group_labels / rho[:, None]))
        s_vv.diagonal().zero_()
        s_vv.diagonal().copy_(-s_vv.sum(-1))
        s_vv = s_vv[1:, 1:]
        s_va = (centred * q).sum(-2).T[1:]  # [K - 1, M]
        rhs_v = ((kappa - c) - group_labels.T @ (b_group / rho))[1:]
    else:
        s_vv, s_va, rhs_v = q.new_zeros(0, 0), q.new_zeros(0, num_features), q.new_zeros(0)
    schur = torch.cat([torch.cat([s_vv, s_va], 1), torch.cat([s_va.T, s_aa], 1)])
    solution = _pseudo_solve((schur + schur.T) / 2, torch.cat([rhs_v, rhs_a]))
    dv = q.new_zeros(num_labels)
    dv[num_labels - rhs_v.shape[0] :] = solution[: rhs_v.shape[0]]
    da = solution[rhs_v.shape[0] :]
    d_group = (b_group - group_labels @ dv) / rho - da @ phi_bar
    change = torch.einsum("m,mnk->nk", da, phi) + dv[None, :] + d_group[:, None]
    largest_change = float(change.abs().max())
    if largest_change > _MAX_LOG_CHANGE:
        scale = _MAX_LOG_CHANGE / largest_change
        d_group, dv, da, change = scale * d_group, scale * dv, scale * da, scale * change
    gradient_dot = b_group @ d_group + (mean - t) @ da
    target_dot = d_group @ group_target + da @ t
    if c is not None:
        gradient_dot = gradient_dot + (kappa - c) @ dv
        target_dot = target_dot + c @ dv
    slope, target_dot = -float(gradient_dot), float(target_dot)
    if not slope < 0:
        return None
    rounding = 64 * torch.finfo(log_q.dtype).eps
    step = 1.0
    for _ in range(_MAX_HALVINGS):
        shifted = log_q - step * change
        shift = torch.logsumexp(shifted, dim=(-2, -1))
        dual = float(shift) + step * target_dot
        if dual <= _ARMIJO * step * slope + rounding:
            break
        step /= 2
    else:
        return None
    du = step * d_group if r is not None else q.new_zeros(num_samples)
    log_z = log_z + shift + (step * d_group[0] if r is None else 0.0)
    return shifted - shift, log_z, du, step * dv, step * da


def _newton_block(
    log_q: Tensor, a: Tensor, log_z: Tensor, phi: Tensor, t: Tensor, tolerance: float
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Minimize the dual over :math:`a` at fixed potentials by damped Newton steps.

    Relative to the current (normalized) ``log_q``, the block dual of a step :math:`\delta` is
    :math:`h(\delta) = \log\sum_{ij} q_{ij} e^{-\delta\cdot\phi_{ij}} + \delta\cdot t`, with
    :math:`h(0) = 0`, gradient :math:`t - \mathbb E_q[\phi]` and Hessian
    :math:`\operatorname{Cov}_q[\phi]` at :math:`\delta = 0`.
    """
    num_features = phi.shape[0]
    # Dual values near 0 are resolved to a few ulps; decreases below that are rounding noise.
    rounding = 64 * torch.finfo(log_q.dtype).eps
    for _ in range(_NEWTON_STEPS_PER_SWEEP):
        q = log_q.exp()
        mean = (phi * q).sum((-2, -1))
        gradient = t - mean
        if float(gradient.abs().max()) <= tolerance:
            break
        centered = (phi - mean[:, None, None]).reshape(num_features, -1)
        hessian = (centered * q.reshape(1, -1)) @ centered.T
        direction = -_pseudo_solve(hessian, gradient)
        largest_change = float(torch.einsum("m,mnk->nk", direction, phi).abs().max())
        if largest_change > _MAX_LOG_CHANGE:
            direction = direction * (_MAX_LOG_CHANGE / largest_change)
        slope = float(gradient @ direction)
        if slope >= 0:  # no descent direction left: the block is solved to rounding
            break
        step = 1.0
        for _ in range(_MAX_HALVINGS):
            delta = step * direction
            shifted = log_q - torch.einsum("m,mnk->nk", delta, phi)
            shift = torch.logsumexp(shifted, dim=(-2, -1))
            dual = float(shift + delta @ t)
            if dual <= _ARMIJO * step * slope + rounding:
                break
            step /= 2
        else:
            break
        log_q = shifted - shift
        a = a + delta
        log_z = log_z + shift
    return log_q, a, log_z


def _pseudo_solve(hessian: Tensor, gradient: Tensor) -> Tensor:
    """Least-norm solution of ``hessian @ x = gradient`` for a symmetric PSD ``hessian``.

    The covariance is first scaled to unit diagonal (Jacobi), so that a feature of tiny variance
    (an indicator of a nearly empty cell has variance ~ its mass, 1e-20 at large beta) keeps its
    curvature instead of drowning in the rounding of the others. Eigen-directions of the scaled
    matrix below ``M * eps * largest`` (features that are constant, or linear combinations of
    others, under the ensemble) are dropped, as in ``numpy.linalg.pinv``.
    """
    scale = hessian.diagonal().clamp_min(0).sqrt()
    varies = scale > 0
    scale = torch.where(varies, scale, 1.0)
    scaled = hessian / (scale[:, None] * scale[None, :])
    eigenvalues, eigenvectors = torch.linalg.eigh(scaled)
    cutoff = hessian.shape[0] * torch.finfo(hessian.dtype).eps * eigenvalues.abs().max()
    kept = eigenvalues > cutoff
    inverse = torch.where(kept, 1.0 / torch.where(kept, eigenvalues, 1.0), 0.0)
    solution = eigenvectors @ (inverse * (eigenvectors.T @ (gradient / scale)))
    return torch.where(varies, solution / scale, 0.0)


def _violation(q: Tensor, phi: Tensor, t: Tensor, r: Tensor | None, c: Tensor | None) -> float:
    errors = [(q.sum() - 1).abs().reshape(1)]
    if r is not None:
        errors.append((q.sum(-1) - r).abs())
    if c is not None:
        errors.append((q.sum(-2) - c).abs())
    if phi.shape[0] > 0:
        errors.append(((phi * q).sum((-2, -1)) - t).abs())
    return float(torch.cat(errors).max())


def _check_initial(initial: object, num_samples: int, num_labels: int, num_features: int) -> None:
    if initial is None:
        return
    if not isinstance(initial, GeneralizedGibbsEnsemble):
        raise TypeError(
            "initial must be a GeneralizedGibbsEnsemble (an earlier result) or None, got "
            f"{type(initial).__name__}"
        )
    for field, size in (
        ("multipliers", num_features),
        ("row_potential", num_samples),
        ("col_potential", num_labels),
    ):
        value = getattr(initial, field)
        name = f"initial.{field}"
        check_tensor(name, value)
        if tuple(value.shape) != (size,):
            raise ValueError(
                f"{name} must have shape ({size},) to warm-start this problem, got "
                f"{tuple(value.shape)}"
            )
        check_finite(name, value)


def _marginal(name: str, marginal: object, energies: Tensor, size: int) -> Tensor | None:
    if marginal is None:
        return None
    if isinstance(marginal, str):
        if marginal != "uniform":
            raise ValueError(
                f'{name} must be "uniform", None (unconstrained) or a tensor, got {marginal!r}'
            )
        return energies.new_full((size,), 1.0 / size)
    check_tensor(name, marginal)
    if tuple(marginal.shape) != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {tuple(marginal.shape)}")
    check_finite(name, marginal)
    marginal = marginal.to(device=energies.device, dtype=energies.dtype)
    if bool((marginal <= 0).any()):
        raise ValueError(f"{name} must be strictly positive (the ensemble has full support)")
    total = float(marginal.sum())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, got sum {total:.8g}")
    return marginal / marginal.sum()


def _features(
    constraints: Sequence[LinearConstraint],
    energies: Tensor,
    r: Tensor | None,
    c: Tensor | None,
    tolerance: float,
) -> tuple[Tensor, Tensor]:
    """Validate the constraints; return the stacked ``[M, N, K]`` features and ``[M]`` targets."""
    if isinstance(constraints, LinearConstraint) or not isinstance(constraints, Sequence):
        raise TypeError(
            "constraints must be a sequence of LinearConstraint(features, target), got "
            f"{type(constraints).__name__}"
        )
    shape = tuple(energies.shape)
    features, targets = [], []
    for m, constraint in enumerate(constraints):
        name = f"constraints[{m}]"
        if not isinstance(constraint, tuple) or len(constraint) != 2:
            raise TypeError(
                f"{name} must be a LinearConstraint(features, target), got "
                f"{type(constraint).__name__}"
            )
        phi, target = LinearConstraint(*constraint)
        check_tensor(f"{name}.features", phi, min_dim=0)
        try:
            broadcast = torch.broadcast_shapes(phi.shape, shape)
        except RuntimeError:
            broadcast = None
        if broadcast != shape:
            raise ValueError(
                f"{name}.features must broadcast to the energies' shape [N, K] = {list(shape)} "
                "([K] for a label feature, [N, 1] for a sample feature), got shape "
                f"{tuple(phi.shape)}"
            )
        check_finite(f"{name}.features", phi)
        phi = phi.to(device=energies.device, dtype=energies.dtype).expand(shape)
        if isinstance(target, Tensor):
            if target.numel() != 1:
                raise ValueError(f"{name}.target must be a scalar, got shape {tuple(target.shape)}")
            target = target.item()
        if isinstance(target, bool) or not isinstance(target, (int, float)):
            raise TypeError(f"{name}.target must be a real number, got {type(target).__name__}")
        if not math.isfinite(target):
            raise ValueError(f"{name}.target must be finite, got {target!r}")
        _check_reachable(name, phi, float(target), r, c, tolerance)
        features.append(phi)
        targets.append(float(target))
    if not features:
        return energies.new_zeros((0, *shape)), energies.new_zeros(0)
    return torch.stack(features), energies.new_tensor(targets)


def _check_reachable(
    name: str, phi: Tensor, target: float, r: Tensor | None, c: Tensor | None, tolerance: float
) -> None:
    r"""Raise if no positive ensemble with the given marginals has :math:`\mathbb E_q[\phi] = t`.

    Necessary conditions only (the exact range under both marginals is a transport problem):
    :math:`\min\phi < t < \max\phi`; with sample marginals, :math:`\sum_i r_i \min_j \phi_{ij}
    < t < \sum_i r_i \max_j \phi_{ij}`; with label marginals, likewise over :math:`i`. Where
    these bounds meet, the marginals fix :math:`\mathbb E_q[\phi]` and the target must equal it.
    """
    low, high = float(phi.min()), float(phi.max())
    if r is not None:
        low = max(low, float(r @ phi.min(-1).values))
        high = min(high, float(r @ phi.max(-1).values))
    if c is not None:
        low = max(low, float(phi.min(-2).values @ c))
        high = min(high, float(phi.max(-2).values @ c))
    scale = max(1.0, float(phi.abs().max()))
    if high - low <= 64 * torch.finfo(phi.dtype).eps * scale:
        fixed = (low + high) / 2
        if abs(target - fixed) > tolerance:
            raise ValueError(
                f"{name}.target = {target!r} is infeasible: the requested marginals fix the "
                f"expectation of this feature at {fixed!r} (drop the marginal, e.g. "
                "col_marginal=None for a label prior, or drop the constraint)"
            )
    elif not low < target < high:
        raise ValueError(
            f"{name}.target = {target!r} is infeasible: a positive ensemble with the requested "
            f"marginals has an expectation of this feature strictly inside ({low!r}, {high!r})"
        )
