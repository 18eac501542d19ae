r"""Two digit tasks and the data mixture between them (paper 002, §4.1–4.2, §5.2–5.3).

A *task* is a set of digit classes (:func:`parse_classes` reads ``"0-4"``). The transfer of
:mod:`thermossl.surface_transfer` moves a model from a source task to a target task through the
mixture

.. math::

    p(x, t) = (1 - t)\, p_s(x) + t\, p_t(x), \qquad t \in [0, 1] \qquad \text{(eq. 23)},

held as weights over the examples (:func:`mixture_weights`), with the labels kept, not
interpolated. :func:`shared_labels` gives both tasks the same :math:`K` classifier outputs
(§5.3), and :func:`interleaved_order` stores the examples so that minibatches drawn at nearby
:math:`t` share most examples (common random numbers for finite differences in :math:`t`).
:class:`Mixture` bundles the two tasks' examples of scikit-learn's digits.
"""

from __future__ import annotations

import re

import torch
from thermossl.models.therml_digits import NUM_CLASSES, DigitsData
from torch import Tensor

__all__ = [
    "Mixture",
    "check_classes",
    "interleaved_order",
    "mixture_weights",
    "parse_classes",
    "shared_labels",
]


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


def check_classes(name: str, classes: object) -> tuple[int, ...]:
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
