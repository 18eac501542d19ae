r"""The neuro-symbolic (NeSy) addition constraint, computed exactly (paper 001, §6.4 and Appendix O).

Each example is a triplet of digit images :math:`\mathbf{x}_i = (x^1_i, x^2_i, x^3_i)` whose labels
satisfy :math:`a + b = c \le 9` ("3 + 2 = 5"); the labels themselves are never seen. A classifier
gives :math:`p(y \mid x; \Theta)` over the :math:`C = 10` digits for each image; the three
predictions are independent given the images, and a *world* is one joint assignment
:math:`w = (y_a, y_b, y_c)`. The probability that the constraint holds is the mass of the worlds
that satisfy it (paper 001, eqs. 8–9, DeepProbLog's inference; here it coincides with the Semantic
Loss of Xu et al. 2018):

.. math::

    P(\mathrm{c} \mid \mathbf{x}; \Theta)
    = \sum_{y_a, y_b, y_c = 0}^{C - 1} p(y_a \mid x^1) \, p(y_b \mid x^2) \, p(y_c \mid x^3)
      \, [\, y_a + y_b = y_c \,],

and the loss is its cross-entropy with the label "true", :math:`\mathcal{L}_{NESY} = -\log
P(\mathrm{c} \mid \mathbf{x})` (paper 001, §6.4). The enumeration is exact: of the
:math:`C^3 = 1000` worlds, :math:`C (C + 1) / 2 = 55` satisfy the constraint (:math:`c \le 9`
holds automatically since :math:`y_c` is a digit), and everything is computed in log space.

.. warning:: **The trivial solution.** Predicting 0 for every image satisfies
    :math:`0 + 0 = 0` with probability one, so :math:`\mathcal{L}_{NESY} = 0`, its global minimum,
    without recognizing a single digit. Training on the constraint alone collapses there (paper
    001, Table 6, "No GEDI (NeSy)": accuracy 0.10, NMI 0.00 at every data size); the GEDI
    uniformity term :math:`\mathcal{L}_{PRIOR}` rules this cluster collapse out.

References:

* Sansone & Manhaeve, *Unifying self-supervised clustering and energy-based models* (GEDI),
  §6.4 eqs. 8–9, Table 6, Appendix O (data generation, Table 9 weights).
* Manhaeve et al. 2018, *DeepProbLog: neural probabilistic logic programming* (MNIST addition).
* Xu et al. 2018, *A semantic loss function for deep learning with symbolic knowledge*.
"""

from __future__ import annotations

import torch
from torch import Tensor

from thermossl._validation import check_finite, check_positive_integer, check_tensor

__all__ = [
    "addition_worlds",
    "constraint_log_probability",
    "make_addition_triplets",
    "nesy_loss",
    "world_posterior",
]


def addition_worlds(num_classes: int = 10, *, device: torch.device | str | None = None) -> Tensor:
    r"""The worlds :math:`(y_a, y_b, y_c)` in which the addition constraint holds.

    .. math::

        W_{abc} = [\, a + b = c \,], \qquad a, b, c \in \{0, \dots, C - 1\},

    so :math:`c \le C - 1` holds by construction. There are :math:`C (C + 1) / 2` true worlds
    (55 of the 1000 for digits): one for each pair :math:`(a, b)` with :math:`a + b \le C - 1`.

    :param int num_classes: :math:`C`, the number of classes (10 digits).
    :param device: where the mask lives.
    :returns: boolean ``[C, C, C]`` mask indexed ``[y_a, y_b, y_c]``.

    Example::

        >>> worlds = addition_worlds()
        >>> worlds.shape, int(worlds.sum()), bool(worlds[3, 2, 5]), bool(worlds[3, 2, 6])
        (torch.Size([10, 10, 10]), 55, True, False)
    """
    check_positive_integer("num_classes", num_classes)
    y = torch.arange(num_classes, device=device)
    return y[:, None, None] + y[None, :, None] == y[None, None, :]


def _check_triplet(
    logits_a: Tensor, logits_b: Tensor, logits_c: Tensor, worlds: Tensor | None
) -> Tensor:
    """Check three ``[n, C]`` logit tensors of one batch and return the ``[C, C, C]`` world mask."""
    named = {"logits_a": logits_a, "logits_b": logits_b, "logits_c": logits_c}
    for name, value in named.items():
        check_tensor(name, value, min_dim=2)
        if value.dim() != 2 or value.shape[0] < 1 or value.shape[1] < 1:
            raise ValueError(
                f"{name} must have shape [n, C] with n >= 1 and C >= 1, got {tuple(value.shape)}"
            )
    if not logits_a.shape == logits_b.shape == logits_c.shape:
        raise ValueError(
            "logits_a, logits_b and logits_c must have the same shape [n, C] (one triplet per "
            f"row), got {tuple(logits_a.shape)}, {tuple(logits_b.shape)} and "
            f"{tuple(logits_c.shape)}"
        )
    for name, value in named.items():
        check_finite(name, value)
    c = logits_a.shape[1]
    if worlds is None:
        return addition_worlds(c, device=logits_a.device)
    if not isinstance(worlds, Tensor) or worlds.dtype != torch.bool:
        raise TypeError(f"worlds must be a boolean torch.Tensor, got {worlds!r:.80}")
    if tuple(worlds.shape) != (c, c, c):
        raise ValueError(f"worlds must have shape {(c, c, c)}, got {tuple(worlds.shape)}")
    if not bool(worlds.any()):
        raise ValueError(
            "worlds must hold at least one true world (the constraint is unsatisfiable)"
        )
    return worlds.to(logits_a.device)


def constraint_log_probability(
    logits_a: Tensor, logits_b: Tensor, logits_c: Tensor, worlds: Tensor | None = None
) -> Tensor:
    r"""Exact :math:`\log P(\mathrm{c} \mid \mathbf{x})` of a constraint, by enumerating its worlds.

    With :math:`\ell^k = \log \operatorname{softmax}(\text{logits}^k)` for the three images,

    .. math::

        \log P(\mathrm{c} \mid \mathbf{x}_i)
        = \operatorname{logsumexp}_{(a, b, c) \,:\, W_{abc}}
          \left( \ell^1_{ia} + \ell^2_{ib} + \ell^3_{ic} \right)

    (paper 001, eqs. 8–9 with one categorical fact per image). Only the true worlds enter the
    log-sum-exp: the others carry zero mass, so no :math:`\log 0` is ever formed and the value and
    gradient stay finite however confident the logits (a confidently violated constraint gives a
    very negative but finite value).

    :param torch.Tensor logits_a: ``[n, C]`` logits of the first summand's image.
    :param torch.Tensor logits_b: ``[n, C]`` logits of the second summand's image.
    :param torch.Tensor logits_c: ``[n, C]`` logits of the sum's image.
    :param torch.Tensor worlds: boolean ``[C, C, C]`` mask of true worlds indexed
        ``[y_a, y_b, y_c]``; :func:`addition_worlds` when ``None``.
    :returns: ``[n]``, one log-probability per triplet (no reduction).

    Example: uniform predictions put :math:`55 / 1000` of their mass on true worlds::

        >>> zeros = torch.zeros(1, 10, dtype=torch.float64)
        >>> round(float(constraint_log_probability(zeros, zeros, zeros).exp()), 12)
        0.055
    """
    worlds = _check_triplet(logits_a, logits_b, logits_c, worlds)
    a, b, c = worlds.nonzero(as_tuple=True)
    log_pa, log_pb, log_pc = (torch.log_softmax(t, dim=-1) for t in (logits_a, logits_b, logits_c))
    return torch.logsumexp(log_pa[:, a] + log_pb[:, b] + log_pc[:, c], dim=-1)


def nesy_loss(
    logits_a: Tensor, logits_b: Tensor, logits_c: Tensor, worlds: Tensor | None = None
) -> Tensor:
    r"""The NeSy constraint loss :math:`\mathcal{L}_{NESY}`, averaged over the batch.

    .. math::

        \mathcal{L}_{NESY} = \frac{1}{n} \sum_{i=1}^{n} CE(1, P(\mathrm{c} \mid \mathbf{x}_i))
        = -\frac{1}{n} \sum_{i=1}^{n} \log P(\mathrm{c} \mid \mathbf{x}_i)

    with :math:`P(\mathrm{c} \mid \mathbf{x}_i)` from :func:`constraint_log_probability`.

    .. warning:: Paper 001 (§6.4) writes a **sum** over the :math:`n` triplets; this is the batch
        **mean**, the sum divided by :math:`n`. Its minimum 0 is reached by the trivial solution
        "every image is a 0" (see the module docstring), so it is meant to be combined with a
        uniformity term (Table 9 weights: :math:`\mathcal{L}_{NESY}` 25,
        :math:`\mathcal{L}_{PRIOR}` 400, :math:`\mathcal{L}_{INV}` 0).

    :param torch.Tensor logits_a: ``[n, C]`` logits of the first summand's image.
    :param torch.Tensor logits_b: ``[n, C]`` logits of the second summand's image.
    :param torch.Tensor logits_c: ``[n, C]`` logits of the sum's image.
    :param torch.Tensor worlds: boolean ``[C, C, C]`` mask of true worlds (addition by default).
    :returns: scalar loss, mean over the :math:`n` triplets.

    Example: the all-zeros collapse has zero loss; a confident "3 + 4 = 5" pays for one flip::

        >>> def confident(*digits):
        ...     return 30.0 * torch.nn.functional.one_hot(torch.tensor(digits), 10).double()
        >>> round(float(nesy_loss(confident(0), confident(0), confident(0))), 6)
        0.0
        >>> round(float(nesy_loss(confident(3), confident(4), confident(5))), 2)
        28.9
    """
    return -constraint_log_probability(logits_a, logits_b, logits_c, worlds).mean()


def world_posterior(
    logits_a: Tensor, logits_b: Tensor, logits_c: Tensor, worlds: Tensor | None = None
) -> Tensor:
    r"""The posterior over worlds given that the constraint holds.

    .. math::

        P(y_a, y_b, y_c \mid \mathbf{x}, \mathrm{c})
        = \frac{p(y_a \mid x^1) \, p(y_b \mid x^2) \, p(y_c \mid x^3) \, W_{y_a y_b y_c}}
               {P(\mathrm{c} \mid \mathbf{x})},

    computed in log space. Its marginals (``posterior.sum((2, 3))`` for :math:`y_a`, and so on)
    are the labels the constraint implies; its arg max is the most probable consistent reading.

    :param torch.Tensor logits_a: ``[n, C]`` logits of the first summand's image.
    :param torch.Tensor logits_b: ``[n, C]`` logits of the second summand's image.
    :param torch.Tensor logits_c: ``[n, C]`` logits of the sum's image.
    :param torch.Tensor worlds: boolean ``[C, C, C]`` mask of true worlds (addition by default).
    :returns: ``[n, C, C, C]`` probabilities indexed ``[i, y_a, y_b, y_c]``; each slice sums to
        one and is exactly zero on the worlds that violate the constraint.

    Example: a confident "3 + 4 = 5" is read as the consistent world closest to it::

        >>> logits = 30.0 * torch.nn.functional.one_hot(torch.tensor([[3], [4], [5]]), 10).double()
        >>> posterior = world_posterior(*logits)
        >>> posterior[0, 3, 4, 5].item(), round(posterior[0].sum().item(), 12)
        (0.0, 1.0)
        >>> sorted(posterior[0].flatten().topk(3).indices.tolist())  # 1+4=5, 3+2=5, 3+4=7
        [145, 325, 347]
    """
    worlds = _check_triplet(logits_a, logits_b, logits_c, worlds)
    log_pa, log_pb, log_pc = (torch.log_softmax(t, dim=-1) for t in (logits_a, logits_b, logits_c))
    joint = log_pa[:, :, None, None] + log_pb[:, None, :, None] + log_pc[:, None, None, :]
    joint = joint.masked_fill(~worlds, -torch.inf)
    n = joint.shape[0]
    return torch.softmax(joint.reshape(n, -1), dim=-1).reshape(joint.shape)


def make_addition_triplets(
    labels: Tensor,
    count: int,
    generator: torch.Generator,
    *,
    num_classes: int = 10,
    replacement: bool = True,
) -> Tensor:
    r"""Draw addition triplets :math:`(i, j, k)` from a labelled data set (paper 001, Appendix O).

    A label pair :math:`(a, b)` is drawn uniformly among the :math:`C (C + 1) / 2` pairs with
    :math:`a + b \le C - 1` (55 for digits), :math:`c = a + b`, and each of the three positions
    gets an example drawn uniformly among those with its label:

    .. math::

        \text{labels}[i] + \text{labels}[j] = \text{labels}[k] \le C - 1.

    .. warning:: Appendix O assigns images **without replacement**; the default here draws each
        example independently (with replacement), so ``count`` is not limited by the data set
        size. Pass ``replacement=False`` for the paper's protocol: no example is used twice, and
        a ``ValueError`` says which class ran out.

    :param torch.Tensor labels: ``[N]`` integer class labels in :math:`\{0, \dots, C - 1\}`.
    :param int count: the number of triplets, :math:`> 0`.
    :param torch.Generator generator: the source of randomness (a CPU generator).
    :param int num_classes: :math:`C`; every class must occur in ``labels``.
    :param bool replacement: draw examples independently (``True``) or use each at most once.
    :returns: ``[count, 3]`` ``int64`` indices into ``labels`` (on its device), one triplet a row.

    Example::

        >>> labels = torch.arange(20) % 10
        >>> triplets = make_addition_triplets(labels, 4, torch.Generator().manual_seed(0))
        >>> triplets.shape
        torch.Size([4, 3])
        >>> y = labels[triplets]
        >>> bool((y[:, 0] + y[:, 1] == y[:, 2]).all())
        True
    """
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be a 1-d integer tensor, got {labels!r:.80}")
    if labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels must be a 1-d integer tensor, got dtype {labels.dtype}")
    check_positive_integer("count", count)
    check_positive_integer("num_classes", num_classes)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    y = labels.detach().to("cpu", torch.int64)
    if bool(((y < 0) | (y >= num_classes)).any()):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]")
    sizes = torch.bincount(y, minlength=num_classes)
    missing = (sizes == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"labels has no example of class(es) {missing}; every class is needed")
    pairs = addition_worlds(num_classes).any(dim=-1).nonzero()  # [C(C+1)/2, 2]: a + b <= C - 1
    drawn = pairs[torch.randint(len(pairs), (count,), generator=generator)]
    wanted = torch.cat([drawn, drawn.sum(-1, keepdim=True)], dim=-1)  # [count, 3] labels
    by_class = torch.argsort(y, stable=True)  # example indices grouped by class
    starts = torch.cumsum(sizes, 0) - sizes
    if replacement:
        u = torch.rand(count, 3, generator=generator, dtype=torch.float64)
        offset = (u * sizes[wanted]).long().minimum(sizes[wanted] - 1)
        return by_class[starts[wanted] + offset].to(labels.device)
    flat = wanted.flatten()
    triplets = torch.empty_like(flat)
    for k in range(num_classes):
        slots = (flat == k).nonzero().flatten()
        if len(slots) > sizes[k]:
            raise ValueError(
                f"class {k} has {int(sizes[k])} example(s) but {len(slots)} draws need it; "
                "lower count or use replacement=True"
            )
        order = torch.randperm(int(sizes[k]), generator=generator)[: len(slots)]
        triplets[slots] = by_class[starts[k] + order]
    return triplets.reshape(count, 3).to(labels.device)
