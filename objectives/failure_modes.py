r"""The triad of failure modes of cluster-based SSL, measured (paper 001, Definitions 8–10, Theorem 1).

* **Representation collapse** (Definition 8): :math:`g(x) = k` for all :math:`x`. Measured by the
  spread :math:`\sqrt{\operatorname{tr} \operatorname{Cov}(g(x))}` over the data, relative to the
  typical size of :math:`g(x)`.
* **Cluster collapse** (Definition 9): one cluster takes every input. Measured by the largest
  share of inputs assigned (by arg max) to one cluster.
* **Label inconsistency** (Definition 10): assignments unrelated to the data's invariances.
  Measured by the share of inputs whose assignment survives the augmentation,
  :math:`\tfrac1n \sum_i [\arg\max p(y \mid x_i) = \arg\max p(y \mid x'_i)]`, and, after the
  definition's adversary, by how much :math:`\mathcal{L}_{INV}` rises when the first views'
  predictions are permuted across inputs (in expectation over uniform permutations,
  :math:`-\sum_y \bar p'(y)\, \overline{\log p}(y)`): labels that are soft and uninformative
  agree under augmentation yet lose nothing when shuffled.

Proposition 1 gives the optimum of the two discriminative losses, so training can be debugged
against them (Figure 4): :math:`\mathcal{L}_{INV} \ge 0` and :math:`\mathcal{L}_{PRIOR} \ge H(p(y))`
(:math:`\ln c` for the uniform prior); :func:`diagnose` reports both with their gaps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from thermossl.objectives.losses import gedi_invariance, gedi_prior
from torch import Tensor

from thermossl._validation import check_views

__all__ = ["FailureModeReport", "diagnose"]


class FailureModeReport(NamedTuple):
    """The measured failure-mode indicators of one model on one data set, and the verdicts."""

    representation_spread: float
    relative_spread: float
    largest_cluster_mass: float
    label_agreement: float
    invariance_loss: float
    shuffled_invariance_loss: float
    prior_loss: float
    prior_optimum: float
    representation_collapse: bool
    cluster_collapse: bool
    label_inconsistency: bool

    def summary(self) -> str:
        """One line per failure mode, with its number and the verdict."""

        def verdict(flag: bool) -> str:
            return "DETECTED" if flag else "no"

        return "\n".join(
            [
                f"representation collapse: {verdict(self.representation_collapse):8s} "
                f"(relative spread of g(x) {self.relative_spread:.3g})",
                f"cluster collapse:        {verdict(self.cluster_collapse):8s} "
                f"(largest cluster mass {self.largest_cluster_mass:.3f})",
                f"label inconsistency:     {verdict(self.label_inconsistency):8s} "
                f"(assignments kept under augmentation {self.label_agreement:.3f})",
                f"L_INV  = {self.invariance_loss:.4f}  (optimum 0; "
                f"{self.shuffled_invariance_loss:.4f} with the labels shuffled across inputs)",
                f"L_PRIOR = {self.prior_loss:.4f}  (optimum {self.prior_optimum:.4f} = H(p(y)))",
            ]
        )


def diagnose(
    features: Tensor,
    logits: Tensor,
    logits_augmented: Tensor,
    prior: Tensor | None = None,
    *,
    spread_threshold: float = 1e-3,
    mass_threshold: float = 0.95,
    agreement_threshold: float = 0.9,
    shuffle_gain_threshold: float = 0.5,
) -> FailureModeReport:
    r"""Measure the three failure modes on ``n`` inputs and their augmentations.

    :param torch.Tensor features: :math:`g(x_i)`, ``[n, h]``.
    :param torch.Tensor logits: :math:`U^\top g(x_i)/\tau`, ``[n, c]``.
    :param torch.Tensor logits_augmented: the logits of the augmented inputs :math:`x'_i`.
    :param torch.Tensor prior: :math:`p(y)` (uniform when ``None``).
    :param float spread_threshold: representation collapse when the spread is below this share of
        the root-mean-square size of :math:`g(x)`.
    :param float mass_threshold: cluster collapse when one cluster holds more than this share.
    :param float agreement_threshold: label inconsistency when fewer assignments survive.
    :param float shuffle_gain_threshold: label inconsistency also when shuffling the first views'
        predictions across inputs (Definition 10's adversary) raises :math:`\mathcal{L}_{INV}` by
        less than this share of its shuffled value: the labels then carry no information about
        which input they belong to.
    :returns: a :class:`FailureModeReport`; the losses are batch means (``gedi_invariance``,
        ``gedi_prior``).

    Example: every input in one cluster::

        >>> logits = torch.tensor([[5.0, 0.0]]).expand(100, 2)
        >>> report = diagnose(torch.randn(100, 3), logits, logits)
        >>> report.cluster_collapse, round(report.prior_optimum, 4)
        (True, 0.6931)
    """
    check_views("logits", logits, "logits_augmented", logits_augmented)
    features, logits, logits_augmented = (
        t.detach().double() for t in (features, logits, logits_augmented)
    )
    c = logits.shape[-1]
    if prior is None:
        prior = torch.full((c,), 1.0 / c, dtype=torch.float64)
    prior = prior.detach().double().to(logits.device)
    centered = features - features.mean(0)
    spread = float(centered.pow(2).sum(-1).mean().sqrt())
    size = float(features.pow(2).sum(-1).mean().sqrt())
    relative = spread / size if size > 0 else 0.0
    assignment = logits.argmax(-1)
    mass = float(torch.bincount(assignment, minlength=c).max()) / logits.shape[0]
    agreement = float((assignment == logits_augmented.argmax(-1)).double().mean())
    optimum = float(-(prior * prior.clamp_min(1e-300).log()).sum())
    invariance = float(gedi_invariance(logits, logits_augmented))
    # E_pi[L_INV] over uniform permutations of the first views: -sum_y mean_i p'_i(y) mean_j log p_j(y)
    log_p = torch.log_softmax(logits, -1)
    shuffled = float(-(torch.softmax(logits_augmented, -1).mean(0) * log_p.mean(0)).sum())
    return FailureModeReport(
        representation_spread=spread,
        relative_spread=relative,
        largest_cluster_mass=mass,
        label_agreement=agreement,
        invariance_loss=invariance,
        shuffled_invariance_loss=shuffled,
        prior_loss=float(gedi_prior(logits, prior)),
        prior_optimum=optimum if c > 1 else 0.0,
        representation_collapse=relative < spread_threshold,
        cluster_collapse=mass > mass_threshold,
        label_inconsistency=agreement < agreement_threshold
        or shuffled - invariance < shuffle_gain_threshold * shuffled,
    )
