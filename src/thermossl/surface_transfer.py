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

**Shared outputs** (``shared_outputs=True``, the default). As the paper does for CIFAR-10 ("we
set the output size of the classifier to be four", §5.3), source and target share the
classifier's outputs: each task's classes are numbered by rank, :math:`0, \dots, K - 1`
(:func:`shared_labels`; 0–4 → 0–4 and 5–9 → 0–4), and the classifier has :math:`K` outputs
(:func:`transfer_worlds`). Both tasks must then name :math:`K` classes each and share none. With
``shared_outputs=False`` the labels stay the digits and the classifier keeps its 10 outputs, so
the target's classes start with outputs the source never trained.

**Weight prior** (``weight_decay`` :math:`\epsilon`, default :math:`10^{-2}`). Every training
minimizes :math:`J + \epsilon\|\theta\|^2/2` (Adam's ``weight_decay``; the term is
:func:`~thermossl.equilibrium_surface.weight_entropy` :math:`S`, logged per row with
:math:`J = R + \lambda D + \gamma C + S`). Paper 002 has a flat prior; on 1,347 digits the flat
prior's :math:`J` keeps falling by memorization, so no finite equilibration reaches a surface
and the finite differences depend on the equilibration's length. :math:`S` does not depend on
:math:`\lambda, \gamma, t`, so eq. 24–30 are unchanged.

**How the process runs** (:func:`run_transfer`). The model first reaches the source surface at
:math:`(\lambda_0, \gamma_0)` (Adam, step-decay schedule, §5.1). Then :math:`t` goes from 0 to 1
in ``steps`` steps of :math:`\Delta t = 1/\text{steps}`; at each step (:func:`transfer_step`)

1. every partial derivative of :math:`R, D, C` in :math:`\lambda, \gamma, t` is a finite
   difference of re-equilibrated functionals (Remark 7): each branch starts from the current
   parameters, equilibrates for ``equilibration_steps`` rise-and-anneal steps at the shifted
   :math:`(\lambda, \gamma, t)` and is read on the training mixture at its own :math:`t`.
   :math:`\lambda, \gamma` use central differences of relative size ``difference``; :math:`t`
   uses a central difference of size ``time_difference`` (default :math:`\Delta t`: the secant
   over the step the process takes) where it fits in :math:`[0, 1]` and a one-sided one against
   an unshifted ("center") branch at the ends (:func:`transfer_derivatives`);
2. eq. 30 gives :math:`(\dot\lambda, \dot\gamma)`, and :math:`\lambda \leftarrow \lambda +
   \dot\lambda\Delta t`, :math:`\gamma \leftarrow \gamma + \dot\gamma\Delta t`, :math:`t
   \leftarrow t + \Delta t` (a multiplier that would fall below ``minimum_multiplier`` is clipped
   there and the row says so);
3. the model equilibrates on :math:`p(x, t + \Delta t)` at the new multipliers.

**The slope k.** §4.3 keeps :math:`k = dD/dR` constant along the path but does not say which
constant. ``slope`` sets it; by default (``slope=None``) it is fixed at the first step as the
slope of the smallest relative change of the multipliers that keeps :math:`C`
(:func:`least_change_slope`). From then on :math:`k` stays fixed, as §4.3 asks.

**Common random numbers.** All branches of a step and the step's own equilibration draw their
minibatches and the encoder's noise from one generator seeded by the step. Minibatches from
:math:`p(x, t)` are drawn by ``torch.multinomial`` (inverse CDF over the examples' order), and
the training examples are stored interleaved by their quantile within each task
(:func:`interleaved_order`), so that a branch at :math:`t \pm h` sees mostly the same examples
and noise as the one at :math:`t`.

**Departures from eq. 30.** ``feedback`` (on by default) replaces the constraint's right-hand
side by :math:`-\partial_t C - (C_{center} - C_0)/\Delta t`, where :math:`C_{center}` is the
unshifted branch (where the model goes with unchanged multipliers and data) and :math:`C_0` the
starting classification loss: each step aims back at :math:`C_0` instead of only holding the
current value. ``max_relative_change`` (off by default) scales both rates down alike when a step
would change :math:`\lambda` or :math:`\gamma` by more than this share (the row logs
``rate_scale``; the logged rates are eq. 30's, before scaling).

.. warning:: On digits (0–4 → 5–9, :math:`(\lambda_0, \gamma_0) = (0.5, 5)`, 10 steps of 1000-step
    equilibrations, :math:`\epsilon = 10^{-2}`, shared outputs) neither variant is an
    iso-classification process from end to end.

    * *The start is stiff.* The source model has never seen the target classes: at fixed
      multipliers :math:`C` on the mixture rises from 0.018 at :math:`t = 0` to 0.12 at
      :math:`t = 0.05` and 0.14 at :math:`t = 0.1`, while :math:`\partial C/\partial\gamma =
      -0.0029`, so eq. 30 asks :math:`\gamma` 5 → 74 (tangent, ``time_difference=0.05``) or
      5 → 47 (secant) in the first step. Damping at 0.5 would cap it at 7.5 (not run with the
      prior), so damping is off.
    * *Eq. 30 as written drifts.* After such a jump one equilibration does not reach the surface
      (one more lowers :math:`C` by 41 % and 21 % after the first two steps, by 8–14 % later),
      and eq. 30 only holds :math:`C` where it is: :math:`C` went −24, −61, −71, …, −81 %
      (:math:`t = 0.1 … 0.8`). With ``feedback`` (and the secant) it went +11, −26, +31, +8 %
      and then stayed within 3.5 % of :math:`C_0` for :math:`t = 0.5 … 0.8`.
    * *The geodesic row collapses at the end.* The least-change slope is :math:`k \approx -2.07
      \approx -1/\lambda_0` (:math:`D` rises with :math:`t` far faster than :math:`R`); holding
      the straight line while the target's larger distortion comes in pushes :math:`\lambda`
      up geometrically (0.5 → 11.7 with feedback, → 90 without, by :math:`t = 0.8`) as
      :math:`\partial D/\partial\lambda` shrinks (−21 → −0.05). At :math:`t = 0.9`,
      :math:`\partial_t D` turns negative and eq. 30 asks :math:`\Delta\lambda \approx -14.5`
      (feedback run): both multipliers are clipped to ``minimum_multiplier``, the
      representation is lost (:math:`R \approx 0`, :math:`D \approx 290`) and :math:`C` ends
      near 1.6, about 80 times :math:`C_0`.

**Baselines** (§5.2, Fig. 5). *Fine-tuning*: the source model trained on the target alone at
:math:`(\lambda_0, \gamma_0)` for as many gradient steps as the transfer took in all (branches
included), in one chunk per transfer step, each chunk with the same rise-and-anneal schedule
(peak ``peak_learning_rate``) as an equilibration, the target accuracy logged after each.
*Scratch*: a freshly initialized model trained on the target at :math:`(\lambda_0, \gamma_0)`
like the source one. Metrics and the figure: :mod:`thermossl.surface_transfer_figures`.

Outputs (``out``): ``path.csv`` (``step, t, lambda, gamma, R, D, C, S, J, test_C``,
accuracies, the finite-difference derivatives, the rates), ``finetune.csv``, ``metrics.json``,
``transfer.png``, ``config.json`` and ``checkpoint.pt`` (after every step; ``resume=True``
continues bit for bit).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from thermossl._validation import check_positive, check_positive_integer
from thermossl.equilibrium_surface import equilibrate, evaluate_functionals, weight_entropy
from thermossl.inference.quasi_static import SurfaceTangents, geodesic_transfer_rates
from thermossl.models.therml_digits import NUM_CLASSES, DigitsData, DigitsWorlds, digits_data
from thermossl.runs import (
    environment,
    setting_differences,
    write_atomically,
    write_csv,
    write_figure,
    write_json,
)
from thermossl.surface_transfer_figures import transfer_figure, transfer_metrics

__all__ = [
    "Mixture",
    "TransferConfig",
    "TransferState",
    "interleaved_order",
    "least_change_slope",
    "mixture_weights",
    "parse_classes",
    "run_transfer",
    "shared_labels",
    "transfer_derivatives",
    "transfer_rates",
    "transfer_step",
    "transfer_worlds",
]

FUNCTIONALS = ("R", "D", "C")


# classes, labels and the data mixture ----------------------------------------------------------


def parse_classes(text: str) -> tuple[int, ...]:
    """Digit classes from ``"0-4"``, ``"5,6,7"``, ``"3"`` or a mix (``"0-2,7"``), sorted.

    Example::

        >>> parse_classes("0-4"), parse_classes("7, 5,6"), parse_classes("0-1,9")
        ((0, 1, 2, 3, 4), (5, 6, 7), (0, 1, 9))
        >>> parse_classes("4-11")
        Traceback (most recent call last):
        ...
        ValueError: classes must lie in 0-9, got 11 in '4-11'
    """
    if not isinstance(text, str):
        raise TypeError(f"classes must be a string such as '0-4', got {type(text).__name__}")
    if not text.strip():
        raise ValueError("classes must name at least one digit (e.g. '0-4' or '5,6,7'), got ''")
    classes: set[int] = set()
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item)
        if match is None:
            raise ValueError(
                f"cannot read the classes {text!r}: expected digits 0-9 as ranges 'a-b' or "
                "comma-separated values, e.g. '0-4' or '5,6,7'"
            )
        low = int(match[1])
        high = low if match[2] is None else int(match[2])
        for value in (low, high):
            if value >= NUM_CLASSES:
                raise ValueError(
                    f"classes must lie in 0-{NUM_CLASSES - 1}, got {value} in {text!r}"
                )
        if high < low:
            raise ValueError(f"the range {item.strip()!r} in {text!r} runs backwards")
        classes.update(range(low, high + 1))
    return tuple(sorted(classes))


def _check_classes(name: str, classes: object) -> tuple[int, ...]:
    if not isinstance(classes, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of digit classes, got {type(classes).__name__}")
    if len(classes) == 0:
        raise ValueError(f"{name} must name at least one digit class, got an empty split")
    for value in classes:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < NUM_CLASSES:
            raise ValueError(f"{name} must hold digit classes 0-{NUM_CLASSES - 1}, got {value!r}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"{name} names a class twice: {tuple(classes)!r}")
    return tuple(classes)


def _members(labels: Tensor, classes: tuple[int, ...]) -> Tensor:
    """``[N]`` booleans: which examples have a label in ``classes``."""
    return torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))


def shared_labels(labels: Tensor, source: tuple[int, ...], target: tuple[int, ...]) -> Tensor:
    r"""Each digit replaced by its rank within its task, :math:`0, \dots, K - 1`: the labels of a
    classifier whose :math:`K` outputs both tasks share (paper 002, §5.3).

    The tasks must name the same number :math:`K` of classes and share none; every label must
    belong to one of them.

    Example::

        >>> shared_labels(torch.tensor([0, 5, 4, 9, 7]), (0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
        tensor([0, 0, 4, 4, 2])
        >>> shared_labels(torch.tensor([2, 8]), (2, 1), (9, 8))  # ranks in sorted order
        tensor([1, 0])
    """
    if len(source) != len(target):
        raise ValueError(
            f"shared outputs need as many source as target classes, got {len(source)} "
            f"{tuple(source)!r} and {len(target)} {tuple(target)!r} (use separate outputs, "
            "--separate-outputs, for tasks of different sizes)"
        )
    overlap = sorted(set(source) & set(target))
    if overlap:
        raise ValueError(f"shared outputs need disjoint tasks, but both name {overlap}")
    rank = torch.full((NUM_CLASSES,), -1, dtype=labels.dtype)
    for classes in (source, target):
        for position, digit in enumerate(sorted(classes)):
            rank[digit] = position
    mapped = rank[labels]
    if bool((mapped < 0).any()):
        stray = sorted(set(labels[mapped < 0].tolist()))
        raise ValueError(f"labels {stray} belong to neither the source nor the target task")
    return mapped


def mixture_weights(
    labels: Tensor, source: tuple[int, ...], target: tuple[int, ...], t: float
) -> Tensor:
    r"""The mixture :math:`p(x, t) = (1 - t) p_s + t p_t` (eq. 23) as weights over the examples:
    :math:`w_i = (1 - t)\,[y_i \in S]/N_s + t\,[y_i \in T]/N_t` (float64, summing to one), where
    :math:`N_s, N_t` count the examples of each task. Examples of neither task weigh zero.

    Example::

        >>> mixture_weights(torch.tensor([0, 5, 1, 6, 7]), (0, 1), (5, 6, 7), t=0.25)
        tensor([0.3750, 0.0833, 0.3750, 0.0833, 0.0833], dtype=torch.float64)
    """
    if not (isinstance(t, (int, float)) and 0.0 <= t <= 1.0):
        raise ValueError(f"t must lie in [0, 1], got {t!r}")
    weights = torch.zeros(labels.shape[0], dtype=torch.float64)
    for name, classes, share in (("source", source, 1 - t), ("target", target, t)):
        mask = _members(labels, classes)
        if not bool(mask.any()):
            raise ValueError(f"the data hold no example of the {name} classes {tuple(classes)!r}")
        weights += share * mask.double() / int(mask.sum())
    return weights


def interleaved_order(labels: Tensor, source: tuple[int, ...], target: tuple[int, ...]) -> Tensor:
    r"""A permutation of the examples that interleaves the two tasks by quantile: the
    :math:`k`-th of :math:`N_s` source examples sits at :math:`(k + 1/2)/N_s`, the :math:`k`-th of
    :math:`N_t` target examples at :math:`(k + 1/2)/N_t` (an example of both tasks at its source
    place; examples of neither at the end).

    With the examples in this order the cumulative mixture weight up to a place is nearly
    independent of :math:`t`, so inverse-CDF draws (``torch.multinomial``) from :math:`p(x, t)`
    and :math:`p(x, t + h)` with the same generator mostly pick the same examples: common random
    numbers across the branches of a finite difference in :math:`t`.

    Example::

        >>> interleaved_order(torch.tensor([0, 0, 0, 0, 5, 5, 9]), (0,), (5,))
        tensor([0, 4, 1, 2, 5, 3, 6])
    """
    position = torch.full((labels.shape[0],), 2.0, dtype=torch.float64)
    for classes in (target, source):  # source last: an example of both tasks takes its place
        members = torch.nonzero(_members(labels, classes)).flatten()
        position[members] = (torch.arange(members.numel(), dtype=torch.float64) + 0.5) / max(
            members.numel(), 1
        )
    return torch.argsort(position, stable=True)


class Mixture:
    """The examples of the two tasks (others dropped), the training ones in
    :func:`interleaved_order`, with the labels the classifier sees (:func:`shared_labels` with
    ``shared_outputs``, else the digits) and the weights of :math:`p(x, t)` on the training and
    the test examples.

    :ivar DigitsData data: pixels and classifier labels.
    :ivar Tensor train_digits: the training examples' digits (they decide the weights).
    :ivar int num_outputs: the classifier's outputs, :math:`K` or 10.
    """

    def __init__(
        self,
        data: DigitsData,
        source: tuple[int, ...],
        target: tuple[int, ...],
        shared_outputs: bool = False,
    ):
        self.source, self.target = tuple(source), tuple(target)
        both = self.source + self.target
        train = _members(data.train_labels, both)
        test = _members(data.test_labels, both)
        train_pixels, train_digits = data.train_pixels[train], data.train_labels[train]
        order = interleaved_order(train_digits, self.source, self.target)
        self.train_digits, self.test_digits = train_digits[order], data.test_labels[test]
        for digits in (self.train_digits, self.test_digits):  # fail early on an empty task
            mixture_weights(digits, self.source, self.target, 0.5)
        if shared_outputs:
            labels = [
                shared_labels(digits, self.source, self.target)
                for digits in (self.train_digits, self.test_digits)
            ]
            self.num_outputs = len(self.source)
        else:
            labels = [self.train_digits, self.test_digits]
            self.num_outputs = NUM_CLASSES
        self.data = DigitsData(train_pixels[order], labels[0], data.test_pixels[test], labels[1])

    def train_weights(self, t: float) -> Tensor:
        return mixture_weights(self.train_digits, self.source, self.target, t)

    def test_weights(self, t: float) -> Tensor:
        return mixture_weights(self.test_digits, self.source, self.target, t)


# settings, model and state ---------------------------------------------------------------------


@dataclass
class TransferConfig:
    r"""Settings of a geodesic iso-classification transfer (paper 002, §4.3 and §5.2).

    ``source``/``target``: the digit classes of the two tasks (tuples, or strings read by
    :func:`parse_classes`); they must be disjoint unless ``allow_overlap`` (which needs
    ``shared_outputs=False``). ``shared_outputs`` numbers each task's classes by rank and gives
    the classifier :math:`K` outputs (:func:`shared_labels`; equal class counts required).
    ``initial_steps`` Adam steps at ``learning_rate`` (step decay) reach the source surface at
    :math:`(\lambda_0, \gamma_0)` = ``(lambda_, gamma)``; ``steps`` process steps take :math:`t`
    from 0 to 1, each branch and each step equilibrating for ``equilibration_steps``
    rise-and-anneal steps peaking at ``peak_learning_rate``; every training adds
    ``weight_decay`` :math:`\epsilon\|\theta\|^2/2`. ``difference`` is the finite-difference step
    relative to each multiplier, ``time_difference`` the one in :math:`t` (``None``: one process
    step, :math:`\Delta t`). ``slope`` is :math:`k = dD/dR` (``None``: :func:`least_change_slope`
    at the first step). ``feedback`` (on by default) and ``max_relative_change`` (off) are the
    departures from eq. 30 (module notes). The learning rates, equilibration length and weight
    prior follow :class:`~thermossl.equilibrium_surface.SurfaceConfig`.
    """

    source: tuple[int, ...] = (0, 1, 2, 3, 4)
    target: tuple[int, ...] = (5, 6, 7, 8, 9)
    shared_outputs: bool = True
    lambda_: float = 0.5
    gamma: float = 5.0
    steps: int = 10
    initial_steps: int = 25_000
    learning_rate: float = 1e-2
    equilibration_steps: int = 1000
    peak_learning_rate: float = 1.5e-2
    weight_decay: float = 1e-2
    difference: float = 0.05
    time_difference: float | None = None
    slope: float | None = None
    feedback: bool = True
    max_relative_change: float | None = None
    minimum_multiplier: float = 1e-3
    batch_size: int = 256
    latent_dim: int = 6
    hidden: int = 48
    evaluation_draws: int = 4
    seed: int = 0
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
        source = _check_classes("source", self.source)
        target = _check_classes("target", self.target)
        shared = sorted(set(source) & set(target))
        if shared and not self.allow_overlap:
            raise ValueError(
                f"source and target share the classes {shared}; they must be disjoint "
                "(pass allow_overlap=True, --allow-overlap, to transfer between overlapping sets)"
            )
        if self.shared_outputs:
            shared_labels(torch.tensor(source + target), source, target)  # equal sizes, disjoint
        for name in (
            "lambda_",
            "gamma",
            "learning_rate",
            "peak_learning_rate",
            "minimum_multiplier",
        ):
            check_positive(name, getattr(self, name))
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < math.inf):
            raise ValueError(
                f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}"
            )
        if not 0 < self.difference < 1:
            raise ValueError(f"difference must lie in (0, 1), got {self.difference!r}")
        if self.max_relative_change is not None and not 0 < self.max_relative_change < 1:
            raise ValueError(
                f"max_relative_change must lie in (0, 1) or be None, got {self.max_relative_change!r}"
            )
        if self.time_difference is not None and not 0 < self.time_difference <= 0.5:
            raise ValueError(
                f"time_difference must lie in (0, 0.5] or be None, got {self.time_difference!r}"
            )
        if self.slope is not None:
            if not math.isfinite(self.slope):
                raise ValueError(f"slope must be a finite number or None, got {self.slope!r}")
            if abs(1 + self.slope * self.lambda_) < 1e-12:
                raise ValueError("slope must not be -1/lambda_ (eq. 30 divides by 1 + k lambda)")
        for name in (
            "steps",
            "initial_steps",
            "equilibration_steps",
            "batch_size",
            "latent_dim",
            "hidden",
            "evaluation_draws",
        ):
            check_positive_integer(name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    steps``), the slope :math:`k` once fixed, and the classification loss at the start."""

    worlds: DigitsWorlds
    lambda_: float
    gamma: float
    step: int = 0
    slope: float | None = None
    reference_C: float = math.nan


# one step of the process -----------------------------------------------------------------------


def _train_values(worlds: DigitsWorlds, mixture: Mixture, t: float, draws: int) -> dict:
    data = mixture.data
    return evaluate_functionals(
        worlds, data.train_pixels, data.train_labels, draws, weights=mixture.train_weights(t)
    )


def _row_values(
    worlds: DigitsWorlds, mixture: Mixture, t: float, config: TransferConfig, lambda_, gamma
) -> dict[str, float]:
    r"""R, D, C on the training mixture at ``t``, :math:`S` and :math:`J = R + \lambda D + \gamma C
    + S`; C and accuracy on the test mixture at ``t``, accuracy on the target's and on the
    source's test examples."""
    data, draws = mixture.data, config.evaluation_draws
    train = _train_values(worlds, mixture, t, draws)

    def test(time: float) -> dict[str, float]:
        weights = mixture.test_weights(time)
        return evaluate_functionals(
            worlds, data.test_pixels, data.test_labels, draws, weights=weights
        )

    S = weight_entropy(worlds, config.weight_decay)
    at_t = test(t)
    return {
        **{key: train[key] for key in FUNCTIONALS},
        "S": S,
        "J": train["R"] + lambda_ * train["D"] + gamma * train["C"] + S,
        "test_C": at_t["C"],
        "accuracy": at_t["accuracy"],
        "target_accuracy": test(1.0)["accuracy"],
        "source_accuracy": test(0.0)["accuracy"],
    }


def _step_seed(config: TransferConfig, step: int) -> int:
    """The seed shared by every branch of process step ``step`` (0-based) and its equilibration."""
    return config.seed + 1000 * (step + 1)


def _equilibrate(worlds, mixture, config, lambda_, gamma, t, seed, **options) -> None:
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
) -> tuple[dict[str, Any], dict[str, float] | None, int]:
    r"""Finite differences of the re-equilibrated :math:`R, D, C` in :math:`\lambda, \gamma, t`
    at the state's point (Remark 7 with Lemma 9's time).

    Every branch starts from ``state.worlds``'s parameters (restored after it), equilibrates at its
    shifted :math:`(\lambda, \gamma, t)` with the step's seed and is read on the training mixture
    at its :math:`t`. Returns the derivatives (keys ``dX/dlambda``, ``dX/dgamma``, ``dX/dt`` and
    ``time_scheme``: ``central``, ``forward`` or ``backward``), the unshifted branch's values
    (``None`` if it was not needed) and the number of gradient steps taken.
    """
    worlds = state.worlds
    t = state.step / config.steps
    seed = _step_seed(config, state.step)
    start = copy.deepcopy(worlds.state_dict())
    branches = 0

    def branch(lambda_: float, gamma: float, time: float) -> dict[str, float]:
        nonlocal branches
        _equilibrate(worlds, mixture, config, lambda_, gamma, time, seed)
        branches += 1
        values = _train_values(worlds, mixture, time, config.evaluation_draws)
        worlds.load_state_dict(start)  # every branch starts from the same parameters
        return values

    derivatives: dict[str, Any] = {}
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

    h = config.time_difference if config.time_difference is not None else 1.0 / config.steps
    fits_above, fits_below = t + h <= 1 + 1e-12, t - h >= -1e-12
    center = None
    if config.feedback or not (fits_above and fits_below):
        center = branch(state.lambda_, state.gamma, t)
    if fits_above and fits_below:
        scheme, width = "central", 2 * h
        upper = branch(state.lambda_, state.gamma, min(t + h, 1.0))
        lower = branch(state.lambda_, state.gamma, max(t - h, 0.0))
    elif fits_above:
        scheme, width = "forward", h
        upper, lower = branch(state.lambda_, state.gamma, min(t + h, 1.0)), center
    else:
        scheme, width = "backward", h
        upper, lower = center, branch(state.lambda_, state.gamma, max(t - h, 0.0))
    for functional in FUNCTIONALS:
        derivatives[f"d{functional}/dt"] = (upper[functional] - lower[functional]) / width
    derivatives["time_scheme"] = scheme
    return derivatives, center, branches * config.equilibration_steps


def _tangents(derivatives: dict[str, Any]) -> SurfaceTangents:
    """The finite differences in :class:`SurfaceTangents`'s ``derivatives`` layout (no
    :math:`\\theta_\\lambda, \\theta_\\gamma`: those exist only for the Hessian route)."""
    pairs = {
        name: (derivatives[f"d{symbol}/dlambda"], derivatives[f"d{symbol}/dgamma"])
        for name, symbol in (("rate", "R"), ("distortion", "D"), ("classification", "C"))
    }
    hessian = torch.tensor([pairs["distortion"], pairs["classification"]], dtype=torch.float64)
    empty = torch.empty(0, dtype=torch.float64)
    return SurfaceTangents(empty, empty, {}, pairs, hessian, ())


def least_change_slope(
    derivatives: dict[str, float], lambda_: float, gamma: float, correction: float = 0.0
) -> float:
    r"""The slope :math:`k = dD/dR` of the smallest relative change of the multipliers that keeps
    :math:`C`: minimize :math:`(\dot\lambda/\lambda)^2 + (\dot\gamma/\gamma)^2` subject to
    :math:`C_\lambda\dot\lambda + C_\gamma\dot\gamma + c = 0`. With :math:`a = C_\lambda\lambda`,
    :math:`b = C_\gamma\gamma` and :math:`c = \partial_t C + \text{correction}`,

    .. math::

        \dot\lambda = -\lambda\,\frac{c\, a}{a^2 + b^2}, \quad
        \dot\gamma = -\gamma\,\frac{c\, b}{a^2 + b^2}, \quad
        \dot D = D_\lambda\dot\lambda + D_\gamma\dot\gamma + \partial_t D, \quad
        k = \frac{\dot D}{\partial_t R - \lambda \dot D},

    the :math:`k` for which eq. 30 returns exactly these rates (its first row reads
    :math:`k\,\partial_t R/(1 + k\lambda) = \dot D`, paper 002 §4.3).

    Example::

        >>> derivatives = {"dC/dlambda": 0.1, "dC/dgamma": -0.02, "dC/dt": 0.5,
        ...                "dD/dlambda": -10.0, "dD/dgamma": 0.5, "dD/dt": 2.0,
        ...                "dR/dlambda": 1.0, "dR/dgamma": 0.1, "dR/dt": 3.0}
        >>> slope = least_change_slope(derivatives, lambda_=0.5, gamma=5.0)
        >>> slope, [round(rate, 9) for rate in transfer_rates(derivatives, 0.5, slope)]
        (-2.75, [-1.0, 20.0])
    """
    a = derivatives["dC/dlambda"] * lambda_
    b = derivatives["dC/dgamma"] * gamma
    c = derivatives["dC/dt"] + correction
    if a * a + b * b == 0:
        raise ValueError("C does not change with lambda or gamma here: no rates can keep it")
    lambda_dot, gamma_dot = -lambda_ * c * a / (a * a + b * b), -gamma * c * b / (a * a + b * b)
    distortion_dot = (
        derivatives["dD/dlambda"] * lambda_dot
        + derivatives["dD/dgamma"] * gamma_dot
        + derivatives["dD/dt"]
    )
    denominator = derivatives["dR/dt"] - lambda_ * distortion_dot
    if denominator == 0:
        raise ValueError("the least-change path is vertical in (R, D); pass an explicit slope")
    return distortion_dot / denominator


def transfer_rates(
    derivatives: dict[str, Any], lambda_: float, slope: float, correction: float = 0.0
) -> tuple[float, float]:
    r""":math:`(\dot\lambda, \dot\gamma)` of eq. 30 (paper 002, §4.3) from finite-difference
    derivatives,

    .. math::

        D_\lambda\dot\lambda + D_\gamma\dot\gamma = \frac{k\,\partial_t R}{1 + k\lambda}
        - \partial_t D, \qquad
        C_\lambda\dot\lambda + C_\gamma\dot\gamma = -(\partial_t C + \text{correction}),

    where ``correction`` is the feedback term (0 for eq. 30 as written).

    Example: with :math:`k = 0` the distortion is held, :math:`\dot D = 0`::

        >>> derivatives = {"dR/dlambda": 1.0, "dR/dgamma": 0.1, "dD/dlambda": -10.0,
        ...                "dD/dgamma": 0.5, "dC/dlambda": 0.1, "dC/dgamma": -0.02,
        ...                "dR/dt": 3.0, "dD/dt": 2.0, "dC/dt": 0.5}
        >>> lambda_dot, gamma_dot = transfer_rates(derivatives, lambda_=0.5, slope=0.0)
        >>> distortion_dot = -10.0 * lambda_dot + 0.5 * gamma_dot + 2.0
        >>> classification_dot = 0.1 * lambda_dot - 0.02 * gamma_dot + 0.5
        >>> abs(distortion_dot) < 1e-12, abs(classification_dot) < 1e-12
        (True, True)
    """
    time_derivatives = {
        "rate": derivatives["dR/dt"],
        "distortion": derivatives["dD/dt"],
        "classification": derivatives["dC/dt"] + correction,
    }
    return geodesic_transfer_rates(_tangents(derivatives), time_derivatives, lambda_, slope)


def transfer_step(state: TransferState, mixture: Mixture, config: TransferConfig) -> dict[str, Any]:
    r"""One step of the geodesic transfer: finite differences, eq. 30, the update of
    :math:`(\lambda, \gamma, t)` and the equilibration on :math:`p(x, t + \Delta t)`. Returns
    the row logged for the step (derivatives and rates are those at the step's start).

    :raises RuntimeError: when eq. 30 has no finite solution (a singular system).
    """
    dt = 1.0 / config.steps
    derivatives, center, gradient_steps = transfer_derivatives(state, mixture, config)
    correction = (center["C"] - state.reference_C) / dt if config.feedback else 0.0
    if state.slope is None:
        state.slope = (
            config.slope
            if config.slope is not None
            else least_change_slope(derivatives, state.lambda_, state.gamma, correction)
        )
    lambda_dot, gamma_dot = transfer_rates(derivatives, state.lambda_, state.slope, correction)
    if not (math.isfinite(lambda_dot) and math.isfinite(gamma_dot)):
        raise RuntimeError(
            f"eq. 30 has no finite solution at step {state.step + 1} (rates {lambda_dot!r}, "
            f"{gamma_dot!r}); the checkpoint keeps the steps before it"
        )
    lambda_start = state.lambda_
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
    _equilibrate(state.worlds, mixture, config, state.lambda_, state.gamma, t, seed)
    return {
        "step": state.step,
        "t": t,
        "lambda": state.lambda_,
        "gamma": state.gamma,
        **_row_values(state.worlds, mixture, t, config, state.lambda_, state.gamma),
        **derivatives,
        "lambda_start": lambda_start,
        "slope": state.slope,
        "C_correction": correction,
        "lambda_rate": lambda_dot,
        "gamma_rate": gamma_dot,
        "rate_scale": scale,
        "lambda_clipped": int(proposed["lambda"] < config.minimum_multiplier),
        "gamma_clipped": int(proposed["gamma"] < config.minimum_multiplier),
        "gradient_steps": gradient_steps + config.equilibration_steps,
    }


# the run ---------------------------------------------------------------------------------------


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def run_transfer(
    config: TransferConfig,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any] | None:
    r"""Run the geodesic iso-classification transfer and its two baselines into ``out``.

    Phases, each checkpointed: the source surface (``initial_steps``), ``config.steps`` transfer
    steps (:func:`transfer_step`), fine-tuning on the target in one chunk per transfer step, and
    training on the target from scratch. Writes ``path.csv`` (after every step), then
    ``finetune.csv``, ``metrics.json`` and ``transfer.png``; returns the metrics
    (:func:`~thermossl.surface_transfer_figures.transfer_metrics`).

    :param bool resume: continue the run in ``out`` from its checkpoint (same settings required).
    :param bool progress: show progress bars (the overall one and those of the long trainings).
    :param int stop_after: stop after this many transfer steps in all, leaving a resumable
        checkpoint (returns ``None``): a time-boxed run.
    :raises FileExistsError: ``out`` holds a run and ``resume`` is false.
    """
    config.validate()
    if stop_after is not None:
        check_positive_integer("stop_after", stop_after)
    out = Path(out)
    checkpoint = out / "checkpoint.pt"
    settings = config.to_dict()
    mixture = Mixture(digits_data(), config.source, config.target, config.shared_outputs)
    lambda0, gamma0 = config.lambda_, config.gamma

    def fresh_worlds() -> DigitsWorlds:
        return transfer_worlds(config, mixture.num_outputs)

    def baseline_values(worlds: DigitsWorlds) -> dict[str, float]:
        values = _row_values(worlds, mixture, 1.0, config, lambda0, gamma0)
        values.pop("accuracy")  # the same as target_accuracy at t = 1
        return values

    worlds = fresh_worlds()
    state = TransferState(worlds, lambda0, gamma0)
    saved: dict[str, Any] = {"rows": [], "finetune_rows": [], "scratch": None}
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"no checkpoint to resume in {out}")
        saved = torch.load(checkpoint, weights_only=False)
        if saved["config"] != settings:
            raise ValueError(
                f"{out} holds a run with other settings "
                f"({setting_differences(saved['config'], settings)}); resume with the same "
                "settings or choose another --out"
            )
        worlds.load_state_dict(saved["worlds"])
        state.lambda_, state.gamma, state.step = saved["lambda_"], saved["gamma"], saved["step"]
        state.slope, state.reference_C = saved["slope"], saved["reference_C"]
    elif checkpoint.exists():
        raise FileExistsError(
            f"{out} already holds a run; pass resume=True (--resume) or another out"
        )
    write_json(out / "config.json", {**settings, "environment": environment()})
    rows: list[dict[str, Any]] = saved["rows"]
    finetune_rows: list[dict[str, Any]] = saved["finetune_rows"]

    def save(finetune_worlds: DigitsWorlds | None = None) -> None:
        saved.update(
            config=settings,
            worlds=worlds.state_dict(),
            lambda_=state.lambda_,
            gamma=state.gamma,
            step=state.step,
            slope=state.slope,
            reference_C=state.reference_C,
            rows=rows,
            finetune_rows=finetune_rows,
        )
        if finetune_worlds is not None:
            saved["finetune_worlds"] = finetune_worlds.state_dict()
        write_atomically(checkpoint, lambda path: torch.save(saved, path), suffix=".pt")

    def train_from_start(model: DigitsWorlds, t: float) -> None:
        """The §5.1 training: ``initial_steps`` Adam steps, step decay from ``learning_rate``."""
        _equilibrate(model, mixture, config, lambda0, gamma0, t, config.seed,
                     steps=config.initial_steps, peak_learning_rate=config.learning_rate,
                     schedule="step_decay", progress=progress)  # fmt: skip

    total = 2 + 2 * config.steps
    done = bool(rows) + state.step + max(len(finetune_rows) - 1, 0) + (saved["scratch"] is not None)
    bar = tqdm(total=total, initial=done, desc="transfer", disable=not progress)
    try:
        if not rows:  # the source surface at (lambda_0, gamma_0)
            bar.set_description("source surface")
            train_from_start(worlds, 0.0)
            rows.append(
                {"step": 0, "t": 0.0, "lambda": lambda0, "gamma": gamma0}
                | _row_values(worlds, mixture, 0.0, config, lambda0, gamma0)
            )
            state.reference_C = rows[0]["C"]
            saved["source_worlds"] = copy.deepcopy(worlds.state_dict())
            save()
            bar.update(1)
        bar.set_description("transfer")
        while state.step < config.steps:
            if stop_after is not None and state.step >= stop_after:
                return None
            row = transfer_step(state, mixture, config)
            rows.append(row)
            save()
            write_csv(out / "path.csv", rows, _columns(rows))
            bar.update(1)
            bar.set_postfix(t=f"{row['t']:.2f}", C=f"{row['C']:.4f}", lam=f"{row['lambda']:.3f}",
                            gam=f"{row['gamma']:.3f}", acc=f"{row['target_accuracy']:.3f}")  # fmt: skip
        write_csv(out / "path.csv", rows, _columns(rows))

        # fine-tuning: the source model on the target alone, as many gradient steps as the transfer
        bar.set_description("fine-tune")
        finetune_worlds = fresh_worlds()
        finetune_worlds.load_state_dict(saved.get("finetune_worlds", saved["source_worlds"]))
        if not finetune_rows:
            finetune_rows.append(
                {"chunk": 0, "gradient_steps": 0, "t": 0.0} | baseline_values(finetune_worlds)
            )
        while len(finetune_rows) <= config.steps:
            chunk = len(finetune_rows)
            steps = rows[chunk]["gradient_steps"]
            _equilibrate(finetune_worlds, mixture, config, lambda0, gamma0, 1.0,
                         config.seed + 1000 * chunk + 500, steps=steps)  # fmt: skip
            finetune_rows.append(
                {
                    "chunk": chunk,
                    "gradient_steps": finetune_rows[-1]["gradient_steps"] + steps,
                    "t": rows[chunk]["t"],
                }
                | baseline_values(finetune_worlds)
            )
            save(finetune_worlds)
            bar.update(1)
            bar.set_postfix(acc=f"{finetune_rows[-1]['target_accuracy']:.3f}")

        if saved["scratch"] is None:  # training on the target from scratch
            bar.set_description("scratch")
            scratch_worlds = fresh_worlds()
            train_from_start(scratch_worlds, 1.0)
            saved["scratch"] = baseline_values(scratch_worlds)
            save(finetune_worlds)
            bar.update(1)
    finally:
        bar.close()

    write_csv(out / "finetune.csv", finetune_rows, _columns(finetune_rows))
    metrics = transfer_metrics(rows, finetune_rows, saved["scratch"], settings)
    write_json(out / "metrics.json", metrics)
    write_figure(out / "transfer.png", transfer_figure(rows, finetune_rows, saved["scratch"]))
    return metrics
