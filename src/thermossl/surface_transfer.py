r"""Geodesic iso-classification transfer between two sets of digit classes (paper 002, §4.2–4.3).

Gao & Chaudhari move a model trained on a *source* task to a *target* task along the
equilibrium surface of :math:`J = R + \lambda D + \gamma C` (eq. 8) while the data change from
one to the other (§5.2, Fig. 5: MNIST digits 0–4 → 5–9; here scikit-learn's digits). The data
are the mixture

.. math::

    p(x, t) = (1 - t)\, p_s(x) + t\, p_t(x), \qquad t \in [0, 1] \qquad \text{(eq. 23)}

with the labels kept (not interpolated). Lemma 9 (eq. 24–25) moves the parameters with
:math:`\dot\theta = \theta_\lambda\dot\lambda + \theta_\gamma\dot\gamma + \theta_t`, and the
iso-classification constraint (eq. 26–28) ties the multipliers' rates together,
:math:`C_\lambda\dot\lambda + C_\gamma\dot\gamma + C_t = 0`. The geodesic transfer (§4.3) uses
the remaining freedom to keep the path straight in the :math:`(R, D)` plane, :math:`\dot D = k
\dot R` with :math:`\dot R = -\lambda \dot D + \partial_t R`, which gives the linear system

.. math::

    \frac{\partial D}{\partial\lambda}\dot\lambda + \frac{\partial D}{\partial\gamma}\dot\gamma
    = \frac{k\, \partial_t R}{1 + k\lambda} - \partial_t D, \qquad
    \frac{\partial C}{\partial\lambda}\dot\lambda + \frac{\partial C}{\partial\gamma}\dot\gamma
    = -\partial_t C \qquad \text{(eq. 30)}

solved by :func:`~thermossl.inference.quasi_static.geodesic_transfer_rates`.

**Modules.** The two tasks and the mixture: :mod:`thermossl.models.digit_tasks`. Eq. 30, the
corrector and the slope: :mod:`thermossl.surface_transfer_rates`. One step of the process (this
module), the whole run with its baselines (:mod:`thermossl.surface_transfer_run`), its metrics
and figure (:mod:`thermossl.surface_transfer_figures`).

**Shared outputs** (``shared_outputs=True``, the default). As the paper does for CIFAR-10 ("we
set the output size of the classifier to be four", §5.3), source and target share the
classifier's outputs: each task's classes are numbered by rank, :math:`0, \dots, K - 1`
(0–4 → 0–4 and 5–9 → 0–4), and the classifier has :math:`K` outputs (:func:`transfer_worlds`).
Both tasks must then name :math:`K` classes each and share none. With ``shared_outputs=False``
the labels stay the digits and the classifier keeps its 10 outputs.

**Weight prior** (``weight_decay`` :math:`\epsilon`, default :math:`10^{-2}`). Every training
minimizes :math:`J + \epsilon\|\theta\|^2/2` (the term is
:func:`~thermossl.equilibrium_surface.weight_entropy` :math:`S`, logged per row with
:math:`J = R + \lambda D + \gamma C + S`). Paper 002 has a flat prior; on 1,347 digits the flat
prior's :math:`J` keeps falling by memorization, so no finite equilibration reaches a surface.
:math:`S` does not depend on :math:`\lambda, \gamma, t`, so eq. 24–30 are unchanged.

**One step** (:func:`transfer_step`), from :math:`t` to :math:`t + \Delta t`,
:math:`\Delta t = 1/\text{steps}`:

1. every partial derivative of :math:`R, D, C` in :math:`\lambda, \gamma, t` is a finite
   difference of re-equilibrated functionals (Remark 7, :func:`transfer_derivatives`): each
   branch starts from the current parameters, equilibrates for ``equilibration_steps``
   rise-and-anneal steps at the shifted :math:`(\lambda, \gamma, t)` and is read on the training
   mixture at its own :math:`t`; central differences of relative size ``difference`` in the
   multipliers, of size ``time_difference`` (default :math:`\Delta t`) in :math:`t`, one-sided
   at the ends;
2. *predictor*: eq. 30's rates move :math:`\lambda, \gamma` by :math:`\dot\lambda\Delta t,
   \dot\gamma\Delta t` (clipped at ``minimum_multiplier``) and the model equilibrates on
   :math:`p(x, t + \Delta t)`;
3. *corrector* (:func:`correct_onto_path`): eq. 30 fixes rates, so its errors (finite
   differences, an equilibration that does not quite reach the surface) accumulate. While
   :math:`C` is more than ``tolerance`` from :math:`C_0` or the point more than
   ``line_tolerance`` :math:`\cdot D_0` from the line through :math:`(R_0, D_0)`, a damped
   Newton step in :math:`(\log\lambda, \log\gamma)` aims at both, followed by an
   equilibration (at most ``corrections`` per step). This departs from the paper, whose process
   is the predictor alone (``corrections=0``): it is a predictor–corrector continuation of the
   path the paper defines.

**The slope k.** §4.3 keeps :math:`k = dD/dR` constant but does not say which constant.
``slope="chord"`` (default) takes the chord from the source's equilibrium to the target trained
from scratch at :math:`(\lambda_0, \gamma_0)`; ``"least-change"`` the smallest relative change of
the multipliers at :math:`t = 0`; a number sets it.

**Common random numbers.** All branches of a step and the step's own equilibration draw their
minibatches and the encoder's noise from one generator seeded by the step; the training
examples are stored interleaved by quantile within each task, so a branch at :math:`t \pm h`
sees mostly the same examples as the one at :math:`t`.

**Damping** (off by default). ``max_relative_change`` scales both of the predictor's rates
down alike when a step would change a multiplier by more than this share (the row logs
``rate_scale``; the logged rates are eq. 30's, before scaling).

.. note:: On digits 0–4 → 5–9 (defaults: :math:`(\lambda_0, \gamma_0) = (0.5, 5)`, 10 steps,
    1000-step equilibrations, :math:`\epsilon = 10^{-2}`, shared outputs) the corrected process
    keeps :math:`C` within 1.7 % (seed 0) and 2.1 % (seed 1) of :math:`C_0` at every :math:`t`
    (README, paper 002 section). Eq. 30 alone does not: the source model has never seen the
    target classes, so the first predictor step misses :math:`C_0` by +60 % (the finite
    differences at :math:`t = 0` see :math:`\partial_t C = 1.2` against :math:`C_\gamma =
    -0.003`), and open-loop runs drifted by −24 % to −81 %. ``slope="least-change"`` gives
    :math:`k \approx -1/\lambda_0`, next to eq. 30's pole, and collapses the run near
    :math:`t = 0.9`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from thermossl._validation import check_positive, check_positive_integer
from thermossl.equilibrium_surface import (
    SurfaceSettings,
    equilibrate,
    evaluate_functionals,
    weight_entropy,
)
from thermossl.models.digit_tasks import Mixture, check_classes, parse_classes, shared_labels
from thermossl.models.therml_digits import NUM_CLASSES, DigitsWorlds
from thermossl.surface_transfer_rates import (
    least_change_slope,
    path_correction,
    path_residuals,
    transfer_rates,
)

__all__ = [
    "SLOPE_CHOICES",
    "TransferConfig",
    "TransferState",
    "correct_onto_path",
    "equilibrate_on_mixture",
    "row_values",
    "train_values",
    "transfer_derivatives",
    "transfer_step",
    "transfer_worlds",
]

FUNCTIONALS = ("R", "D", "C")
SLOPE_CHOICES = ("chord", "least-change")


# settings, model and state ---------------------------------------------------------------------


@dataclass
class TransferConfig(SurfaceSettings):
    r"""Settings of a geodesic iso-classification transfer (paper 002, §4.3 and §5.2).

    The training settings are :class:`~thermossl.equilibrium_surface.SurfaceSettings`'s:
    ``initial_steps`` reach the source surface at :math:`(\lambda_0, \gamma_0)` = ``(lambda_,
    gamma)``, and ``steps`` process steps (here 10) take :math:`t` from 0 to 1, each branch and
    each step equilibrating for ``equilibration_steps``. ``time_difference`` is the
    finite-difference step in :math:`t` (``None``: one process step, :math:`\Delta t`).

    ``source``/``target``: the digit classes of the two tasks (tuples, or strings read by
    :func:`~thermossl.models.digit_tasks.parse_classes`); they must be disjoint unless
    ``allow_overlap`` (which needs ``shared_outputs=False``). ``shared_outputs`` numbers each
    task's classes by rank and gives the classifier :math:`K` outputs (equal class counts
    required).

    ``slope`` is :math:`k = dD/dR`: a number, ``"chord"`` (the default: the chord to the target
    trained from scratch at :math:`(\lambda_0, \gamma_0)`) or ``"least-change"`` (module notes).
    After each step's equilibration up to ``corrections`` Newton corrections (each followed by
    an equilibration) bring the point back to the line and to :math:`C_0`, until
    :math:`|C/C_0 - 1| \le` ``tolerance`` and the distance from the line
    :math:`|r_{line}| \le` ``line_tolerance`` :math:`\cdot D_0` (0 corrections: eq. 30 alone,
    as in the paper). ``max_relative_change`` (off) damps the predictor (module notes).
    """

    steps: int = 10
    source: tuple[int, ...] = (0, 1, 2, 3, 4)
    target: tuple[int, ...] = (5, 6, 7, 8, 9)
    shared_outputs: bool = True
    time_difference: float | None = None
    slope: float | str = "chord"
    corrections: int = 4
    tolerance: float = 0.02
    line_tolerance: float = 0.02
    max_relative_change: float | None = None
    minimum_multiplier: float = 1e-3
    allow_overlap: bool = False

    def __post_init__(self) -> None:
        for name in ("source", "target"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, parse_classes(value))
            elif isinstance(value, list):
                setattr(self, name, tuple(value))

    def validate(self) -> None:
        """Raise :class:`ValueError` naming the first bad setting."""
        source = check_classes("source", self.source)
        target = check_classes("target", self.target)
        shared = sorted(set(source) & set(target))
        if shared and not self.allow_overlap:
            raise ValueError(
                f"source and target share the classes {shared}; they must be disjoint "
                "(pass allow_overlap=True, --allow-overlap, to transfer between overlapping sets)"
            )
        if self.shared_outputs:
            shared_labels(torch.tensor(source + target), source, target)  # equal sizes, disjoint
        super().validate()
        check_positive("minimum_multiplier", self.minimum_multiplier)
        for name in ("tolerance", "line_tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value < 1):
                raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
        if self.max_relative_change is not None and not 0 < self.max_relative_change < 1:
            raise ValueError(
                f"max_relative_change must lie in (0, 1) or be None, got {self.max_relative_change!r}"
            )
        if self.time_difference is not None and not 0 < self.time_difference <= 0.5:
            raise ValueError(
                f"time_difference must lie in (0, 0.5] or be None, got {self.time_difference!r}"
            )
        if isinstance(self.slope, str):
            if self.slope not in SLOPE_CHOICES:
                raise ValueError(
                    f"slope must be a number or one of {SLOPE_CHOICES}, got {self.slope!r}"
                )
        elif isinstance(self.slope, bool) or not (
            isinstance(self.slope, (int, float)) and math.isfinite(self.slope)
        ):
            raise ValueError(
                f"slope must be a finite number or one of {SLOPE_CHOICES}, got {self.slope!r}"
            )
        elif abs(1 + self.slope * self.lambda_) < 1e-12:
            raise ValueError("slope must not be -1/lambda_ (eq. 30 divides by 1 + k lambda)")
        corrections = self.corrections
        if isinstance(corrections, bool) or not isinstance(corrections, int) or corrections < 0:
            raise ValueError(f"corrections must be a non-negative integer, got {corrections!r}")


def transfer_worlds(config: TransferConfig, num_outputs: int) -> DigitsWorlds:
    r"""A fresh :class:`DigitsWorlds` (seeded by ``config.seed``) whose classifier keeps its first
    ``num_outputs`` outputs: :math:`q(y \mid z) = \operatorname{softmax}(W z + b)_y` over
    :math:`K` shared classes (paper 002, §5.3) instead of 10.

    Example::

        >>> worlds = transfer_worlds(TransferConfig(latent_dim=2, hidden=8), 5)
        >>> worlds.classifier_logits(torch.zeros(3, 2)).shape
        torch.Size([3, 5])
    """
    check_positive_integer("num_outputs", num_outputs)
    if num_outputs > NUM_CLASSES:
        raise ValueError(f"num_outputs must be at most {NUM_CLASSES}, got {num_outputs}")
    worlds = DigitsWorlds(latent_dim=config.latent_dim, hidden=config.hidden, seed=config.seed)
    if num_outputs < NUM_CLASSES:
        full = worlds.classifier
        worlds.classifier = nn.Linear(config.latent_dim, num_outputs, dtype=full.weight.dtype)
        with torch.no_grad():
            worlds.classifier.weight.copy_(full.weight[:num_outputs])
            worlds.classifier.bias.copy_(full.bias[:num_outputs])
    return worlds


@dataclass
class TransferState:
    """Where the transfer stands: the model, the multipliers, the process step (``t = step /
    steps``), the slope :math:`k` once fixed, and the start's :math:`R, D, C` (the path's
    anchor: the line goes through :math:`(R_0, D_0)`, the level is :math:`C_0`)."""

    worlds: DigitsWorlds
    lambda_: float
    gamma: float
    step: int = 0
    slope: float | None = None
    start: dict[str, float] = dataclasses.field(default_factory=dict)


# one step of the process -----------------------------------------------------------------------


def train_values(worlds: DigitsWorlds, mixture: Mixture, t: float, draws: int) -> dict:
    """:math:`R, D, C` and accuracy on the training mixture :math:`p(x, t)`."""
    data = mixture.data
    return evaluate_functionals(
        worlds, data.train_pixels, data.train_labels, draws, weights=mixture.train_weights(t)
    )


def row_values(
    worlds: DigitsWorlds, mixture: Mixture, t: float, config: TransferConfig, lambda_, gamma
) -> dict[str, float]:
    r"""R, D, C on the training mixture at ``t``, :math:`S` and :math:`J = R + \lambda D + \gamma C
    + S`; C and accuracy on the test mixture at ``t``, accuracy on the target's and on the
    source's test examples. The test mixture's values are those of the two tasks mixed,
    :math:`(1 - t)\,X_s + t\,X_t`: an expectation under eq. 23 is linear in :math:`t`."""
    data, draws = mixture.data, config.evaluation_draws
    train = train_values(worlds, mixture, t, draws)
    source, target = (
        evaluate_functionals(
            worlds, data.test_pixels, data.test_labels, draws, weights=mixture.test_weights(end)
        )
        for end in (0.0, 1.0)
    )
    S = weight_entropy(worlds, config.weight_decay)
    return {
        **{key: train[key] for key in FUNCTIONALS},
        "S": S,
        "J": train["R"] + lambda_ * train["D"] + gamma * train["C"] + S,
        "test_C": (1 - t) * source["C"] + t * target["C"],
        "accuracy": (1 - t) * source["accuracy"] + t * target["accuracy"],
        "target_accuracy": target["accuracy"],
        "source_accuracy": source["accuracy"],
    }


def _step_seed(config: TransferConfig, step: int) -> int:
    """The seed shared by every branch of process step ``step`` (0-based) and its equilibration."""
    return config.seed + 1000 * (step + 1)


def equilibrate_on_mixture(worlds, mixture, config, lambda_, gamma, t, seed, **options) -> None:
    """:func:`equilibrate` on :math:`p(x, t)` with the run's batch size and weight prior;
    ``options`` default to a rise-and-anneal equilibration."""
    options = {
        "steps": config.equilibration_steps,
        "peak_learning_rate": config.peak_learning_rate,
        **options,
    }
    equilibrate(
        worlds,
        mixture.data,
        lambda_,
        gamma,
        seed=seed,
        batch_size=config.batch_size,
        sampling_weights=mixture.train_weights(t),
        weight_decay=config.weight_decay,
        **options,
    )


def transfer_derivatives(
    state: TransferState, mixture: Mixture, config: TransferConfig
) -> tuple[dict[str, Any], int]:
    r"""Finite differences of the re-equilibrated :math:`R, D, C` in :math:`\lambda, \gamma, t`
    at the state's point (Remark 7 with Lemma 9's time).

    Every branch starts from ``state.worlds``'s parameters (restored after it), equilibrates at its
    shifted :math:`(\lambda, \gamma, t)` with the step's seed and is read on the training mixture
    at its :math:`t`. Returns the derivatives (keys ``dX/dlambda``, ``dX/dgamma``, ``dX/dt``,
    ``time_scheme``: ``central``, ``forward`` or ``backward``, and ``C_branch_mean``: the four
    multiplier branches' mean :math:`C`, the point's :math:`C` to second order) and the number of
    gradient steps taken. Where :math:`t \pm h` leaves :math:`[0, 1]` the difference in :math:`t` is
    one-sided against an unshifted branch.
    """
    worlds = state.worlds
    t = state.step / config.steps
    seed = _step_seed(config, state.step)
    start = copy.deepcopy(worlds.state_dict())
    branches = 0

    def branch(lambda_: float, gamma: float, time: float) -> dict[str, float]:
        nonlocal branches
        equilibrate_on_mixture(worlds, mixture, config, lambda_, gamma, time, seed)
        branches += 1
        values = train_values(worlds, mixture, time, config.evaluation_draws)
        worlds.load_state_dict(start)  # every branch starts from the same parameters
        return values

    derivatives: dict[str, Any] = {}
    centered: list[float] = []  # C of the four multiplier branches
    for name in ("lambda", "gamma"):
        h = config.difference * (state.lambda_ if name == "lambda" else state.gamma)
        sides = []
        for sign in (1, -1):
            lambda_ = state.lambda_ + (sign * h if name == "lambda" else 0.0)
            gamma = state.gamma + (sign * h if name == "gamma" else 0.0)
            sides.append(branch(lambda_, gamma, t))
        for functional in FUNCTIONALS:
            derivatives[f"d{functional}/d{name}"] = (
                sides[0][functional] - sides[1][functional]
            ) / (2 * h)
        centered.extend(side["C"] for side in sides)

    h = config.time_difference if config.time_difference is not None else 1.0 / config.steps
    here = (state.lambda_, state.gamma)
    fits_above, fits_below = t + h <= 1 + 1e-12, t - h >= -1e-12
    if fits_above and fits_below:
        scheme, width = "central", 2 * h
        upper, lower = branch(*here, min(t + h, 1.0)), branch(*here, max(t - h, 0.0))
    elif fits_above:  # at t = 0: against the unshifted branch
        scheme, width = "forward", h
        lower = branch(*here, t)
        upper = branch(*here, min(t + h, 1.0))
    else:
        scheme, width = "backward", h
        upper = branch(*here, t)
        lower = branch(*here, max(t - h, 0.0))
    for functional in FUNCTIONALS:
        derivatives[f"d{functional}/dt"] = (upper[functional] - lower[functional]) / width
    derivatives["time_scheme"] = scheme
    derivatives["C_branch_mean"] = sum(centered) / len(centered)
    return derivatives, branches * config.equilibration_steps


def correct_onto_path(
    state: TransferState,
    mixture: Mixture,
    config: TransferConfig,
    derivatives: dict[str, Any],
    where: dict[str, float],
    values: dict[str, float],
) -> tuple[dict[str, float], list[dict[str, float]]]:
    r"""The corrector of the predictor–corrector transfer: while :math:`|C/C_0 - 1| >`
    ``config.tolerance`` or the distance from the line :math:`|r_{line}| >`
    ``config.line_tolerance`` :math:`\cdot D_0`, and fewer than ``config.corrections``
    corrections were made, move :math:`(\lambda, \gamma)` by
    :func:`~thermossl.surface_transfer_rates.path_correction` (the damped Newton step in
    :math:`(\log\lambda, \log\gamma)` onto the line through :math:`(R_0, D_0)` of slope
    :math:`k` and onto :math:`C = C_0`, with the finite-difference Jacobian taken at ``where``)
    and equilibrate at the new multipliers on :math:`p(x, t)`.

    ``values`` are the training functionals at the state's current point. Returns those at the
    final point and one record per correction (the multipliers it moved to and the functionals
    read after its equilibration). Each correction's equilibration has its own seed (the
    step's seed plus the correction's number).
    """
    t = state.step / config.steps
    made: list[dict[str, float]] = []
    while len(made) < config.corrections:
        residuals = path_residuals(values, state.start, state.slope)
        on_level = abs(values["C"] / state.start["C"] - 1) <= config.tolerance
        on_line = abs(residuals[0]) <= config.line_tolerance * abs(state.start["D"])
        if on_level and on_line:
            break
        d_lambda, d_gamma = path_correction(derivatives, state.slope, residuals, where)
        state.lambda_ *= math.exp(d_lambda)
        state.gamma *= math.exp(d_gamma)
        seed = _step_seed(config, state.step - 1) + len(made) + 1
        equilibrate_on_mixture(state.worlds, mixture, config, state.lambda_, state.gamma, t, seed)
        values = train_values(state.worlds, mixture, t, config.evaluation_draws)
        made.append({"lambda": state.lambda_, "gamma": state.gamma, **values})
    return values, made


def transfer_step(state: TransferState, mixture: Mixture, config: TransferConfig) -> dict[str, Any]:
    r"""One step of the geodesic transfer: finite differences, eq. 30's predictor, the update of
    :math:`(\lambda, \gamma, t)`, the equilibration on :math:`p(x, t + \Delta t)` and the
    corrections (:func:`correct_onto_path`). Returns the row logged for the step: the point
    after the corrections, the derivatives and rates at the step's start, the predicted point's
    :math:`C` and residuals, and the gradient steps taken.

    :raises RuntimeError: when eq. 30 has no finite solution (a singular system).
    """
    dt = 1.0 / config.steps
    derivatives, gradient_steps = transfer_derivatives(state, mixture, config)
    if state.slope is None:  # "chord" is fixed by the run before the first step
        state.slope = (
            least_change_slope(derivatives, state.lambda_, state.gamma)
            if config.slope == "least-change"
            else float(config.slope)
        )
    lambda_dot, gamma_dot = transfer_rates(derivatives, state.lambda_, state.slope)
    if not (math.isfinite(lambda_dot) and math.isfinite(gamma_dot)):
        raise RuntimeError(
            f"eq. 30 has no finite solution at step {state.step + 1} (rates {lambda_dot!r}, "
            f"{gamma_dot!r}); the checkpoint keeps the steps before it"
        )
    lambda_start, gamma_start = state.lambda_, state.gamma
    scale = 1.0
    if config.max_relative_change is not None:  # a damped step: both rates scaled alike
        largest = max(abs(lambda_dot) * dt / state.lambda_, abs(gamma_dot) * dt / state.gamma)
        scale = min(1.0, config.max_relative_change / largest) if largest > 0 else 1.0
    proposed = {
        "lambda": state.lambda_ + scale * lambda_dot * dt,
        "gamma": state.gamma + scale * gamma_dot * dt,
    }
    state.lambda_ = max(proposed["lambda"], config.minimum_multiplier)
    state.gamma = max(proposed["gamma"], config.minimum_multiplier)
    seed = _step_seed(config, state.step)
    state.step += 1
    t = state.step / config.steps
    equilibrate_on_mixture(state.worlds, mixture, config, state.lambda_, state.gamma, t, seed)
    predicted = train_values(state.worlds, mixture, t, config.evaluation_draws)
    predicted_line, _ = path_residuals(predicted, state.start, state.slope)
    lambda_predicted, gamma_predicted = state.lambda_, state.gamma
    where = {"lambda": lambda_start, "gamma": gamma_start, "C": derivatives["C_branch_mean"]}
    final, made = correct_onto_path(state, mixture, config, derivatives, where, predicted)
    line_residual, _ = path_residuals(final, state.start, state.slope)
    return {
        "step": state.step,
        "t": t,
        "lambda": state.lambda_,
        "gamma": state.gamma,
        **row_values(state.worlds, mixture, t, config, state.lambda_, state.gamma),
        **derivatives,
        "lambda_start": lambda_start,
        "slope": state.slope,
        "lambda_rate": lambda_dot,
        "gamma_rate": gamma_dot,
        "rate_scale": scale,
        "lambda_clipped": int(proposed["lambda"] < config.minimum_multiplier),
        "gamma_clipped": int(proposed["gamma"] < config.minimum_multiplier),
        "lambda_predicted": lambda_predicted,
        "gamma_predicted": gamma_predicted,
        "C_predicted": predicted["C"],
        "line_residual_predicted": predicted_line,
        "corrections": len(made),
        "line_residual": line_residual,
        "correction_path": made,
        "gradient_steps": gradient_steps + (1 + len(made)) * config.equilibration_steps,
    }
