r"""Downstream evaluation of a learned representation and a learned density.

* **Linear probe** (paper 001, Appendix J, Table 10): a multinomial logistic regression fitted on
  frozen features :math:`g(x)` of the training set, scored by its accuracy on the test set.
* **Out-of-distribution detection** (paper 001, §6 and Appendix J, Tables 5, 11 and 12, following
  Grathwohl et al. 2020, §5.2): an energy model :math:`p(x) \propto e^{-E(x)}` ranks inputs by the
  score :math:`s(x) = -\lVert \nabla_x \log p(x) \rVert_2`, and the ranking is summarized by the
  AUROC with the in-distribution test set as the positive class.
* **Shifted digits**: out-of-distribution sets built from in-distribution images in
  :math:`[0, 1]` (uniform noise, inverted, pixel-shuffled, Gaussian-corrupted), so that OOD
  detection can be measured without a second data set.
* **Image grids**: a PNG of grayscale images (data, shifts, or Langevin samples).

References:

* Sansone & Manhaeve, *Unifying self-supervised clustering and energy-based models* (GEDI), §6,
  Appendix J, Tables 5, 10, 11, 12.
* Grathwohl et al. 2020, *Your classifier is secretly an energy based model and you should treat
  it like one* (JEM), §5.2, "approximate mass" score.
* Hanley & McNeil 1982, *The meaning and use of the area under a ROC curve* (AUROC as the
  Mann–Whitney statistic).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from thermossl._validation import (
    check_finite,
    check_positive,
    check_positive_integer,
    check_tensor,
)
from thermossl.runs import write_figure

__all__ = [
    "GAUSSIAN_SHIFT_SCALE",
    "SHIFTS",
    "linear_probe_accuracy",
    "ood_auroc",
    "ood_table",
    "plot_image_grid",
    "score_norm",
    "shifted_digits",
]

#: Out-of-distribution shifts understood by :func:`shifted_digits`.
SHIFTS = ("noise", "inverted", "shuffled", "gaussian")

#: Standard deviation of the ``"gaussian"`` shift, in units of the pixel range :math:`[0, 1]`.
GAUSSIAN_SHIFT_SCALE = 0.3


def _as_numpy(name: str, value: object, dims: int) -> np.ndarray:
    """``value`` (tensor or array-like) as a NumPy array with ``dims`` dimensions."""
    array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
    if array.ndim != dims:
        raise ValueError(f"{name} must have {dims} dimension(s), got shape {array.shape}")
    return array


def linear_probe_accuracy(
    train_features: Tensor | np.ndarray,
    train_labels: Tensor | np.ndarray,
    test_features: Tensor | np.ndarray,
    test_labels: Tensor | np.ndarray,
    seed: int = 0,
) -> float:
    r"""Test accuracy of a linear probe on frozen features (paper 001, Table 10).

    The features are standardized with the training set's mean and standard deviation,
    :math:`\tilde z = (g(x) - \hat\mu) / \hat\sigma`, and a multinomial logistic regression
    :math:`p(y \mid x) = \mathrm{softmax}(W \tilde z + b)_y` is fitted by L-BFGS on the training
    set (scikit-learn's ``LogisticRegression`` with its default L2 penalty, :math:`C = 1`). The
    result is :math:`\tfrac1m \sum_i [\arg\max_y p(y \mid x_i) = y_i]` over the ``m`` test examples.

    :param train_features: ``[N, h]`` features :math:`g(x)` of the training inputs.
    :param train_labels: ``[N]`` integer class labels.
    :param test_features: ``[M, h]`` features of the test inputs.
    :param test_labels: ``[M]`` integer class labels.
    :param int seed: ``random_state`` of the classifier.
    :returns: the test accuracy in :math:`[0, 1]`.
    :raises ValueError: for mismatched shapes or fewer than two classes in the training labels.

    Example::

        >>> z = torch.linspace(-1.0, 1.0, 20).unsqueeze(1)
        >>> y = (z[:, 0] > 0).long()
        >>> linear_probe_accuracy(z, y, -z, 1 - y)
        1.0
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    z_train = _as_numpy("train_features", train_features, 2).astype(np.float64)
    z_test = _as_numpy("test_features", test_features, 2).astype(np.float64)
    y_train = _as_numpy("train_labels", train_labels, 1)
    y_test = _as_numpy("test_labels", test_labels, 1)
    for name, z, y in (("train", z_train, y_train), ("test", z_test, y_test)):
        if z.shape[0] != y.shape[0]:
            raise ValueError(
                f"{name}_features and {name}_labels must have the same number of rows, "
                f"got {z.shape[0]} and {y.shape[0]}"
            )
    if z_train.shape[1] != z_test.shape[1]:
        raise ValueError(
            "train_features and test_features must have the same width, "
            f"got {z_train.shape[1]} and {z_test.shape[1]}"
        )
    if not (np.isfinite(z_train).all() and np.isfinite(z_test).all()):
        raise ValueError("train_features and test_features must be finite (no NaN or inf)")
    if np.unique(y_train).size < 2:
        raise ValueError("train_labels must hold at least two classes for a linear probe")
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(solver="lbfgs", max_iter=2000, random_state=seed)
    )
    probe.fit(z_train, y_train)
    return float(probe.score(z_test, y_test))


def score_norm(energy: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 1024) -> Tensor:
    r"""The OOD score of Grathwohl et al. 2020 (§5.2), used in paper 001 (Tables 5, 11, 12).

    .. math::

        s(x) = -\lVert \nabla_x \log p(x) \rVert_2 = -\lVert \nabla_x E(x) \rVert_2,
        \qquad p(x) = e^{-E(x)} / Z,

    since the normalizer :math:`Z` does not depend on :math:`x`. Inputs where the density is flat
    (near a mode) score high: a larger :math:`s` means more in-distribution. The norm runs over all
    non-batch dimensions of ``x``.

    Gradients are taken with :func:`torch.autograd.grad` with respect to a detached copy of each
    batch of ``x`` only, so nothing accumulates in the ``.grad`` of the energy's parameters; the
    result is detached. Works under :func:`torch.no_grad` too.

    .. warning:: The per-example gradients come from :math:`\nabla_x \sum_i E(x_i)`, which is
        exact only when :math:`E(x_i)` depends on :math:`x_i` alone: put batch-normalized networks
        in evaluation mode first.

    :param callable energy: maps ``[n, *shape]`` inputs to ``[n]`` energies :math:`E(x)`.
    :param torch.Tensor x: ``[n, *shape]`` floating-point inputs.
    :param int batch_size: inputs per backward pass.
    :returns: ``[n]`` scores :math:`s(x)`, in the dtype of ``x``.
    :raises ValueError: when ``energy`` returns the wrong shape or does not depend on ``x``.

    Example::

        >>> def energy(x):  # a standard normal: grad E = x
        ...     return 0.5 * x.pow(2).sum(-1)
        >>> score_norm(energy, torch.tensor([[3.0, 4.0], [1.0, 0.0]])).tolist()
        [-5.0, -1.0]
    """
    check_tensor("x", x, min_dim=2)
    check_finite("x", x)
    check_positive_integer("batch_size", batch_size)
    scores = []
    with torch.enable_grad():
        for chunk in x.detach().split(batch_size):
            chunk = chunk.clone().requires_grad_(True)
            e = energy(chunk)
            if not isinstance(e, Tensor) or tuple(e.shape) != (chunk.shape[0],):
                shape = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
                raise ValueError(f"energy must map [n, ...] inputs to [n] energies, got {shape}")
            if not e.requires_grad:
                raise ValueError(
                    "energy(x) does not depend on x through autograd (was it computed under "
                    "torch.no_grad or detached?)"
                )
            (gradient,) = torch.autograd.grad(e.sum(), chunk, allow_unused=True)
            if gradient is None:
                gradient = torch.zeros_like(chunk)
            scores.append(-gradient.flatten(1).norm(dim=1).detach().to(x.dtype))
    return torch.cat(scores)


def shifted_digits(inputs: Tensor, kind: str, generator: torch.Generator | None = None) -> Tensor:
    r"""An out-of-distribution copy of in-distribution images with pixels in :math:`[0, 1]`.

    * ``"noise"``: :math:`u \sim \mathcal U[0, 1]^d`, independent of the input (same shape);
    * ``"inverted"``: :math:`1 - x` (an involution);
    * ``"shuffled"``: :math:`x_{\pi}` with an independent uniform permutation :math:`\pi` of the
      pixels of each image, which keeps each image's intensity histogram and destroys its shape;
    * ``"gaussian"``: :math:`\mathrm{clip}_{[0, 1]}(x + \sigma \varepsilon)`,
      :math:`\varepsilon \sim \mathcal N(0, I)`, :math:`\sigma` = :data:`GAUSSIAN_SHIFT_SCALE`.

    :param torch.Tensor inputs: ``[n, *shape]`` images in :math:`[0, 1]` (e.g. ``[n, 64]`` digits).
    :param str kind: one of :data:`SHIFTS`.
    :param torch.Generator generator: source of randomness (the global one when ``None``).
    :returns: a new ``[n, *shape]`` tensor of the dtype of ``inputs``.
    :raises ValueError: for an unknown ``kind``, listing the valid ones.

    Example::

        >>> shifted_digits(torch.tensor([[0.0, 0.25, 1.0]]), "inverted").tolist()
        [[1.0, 0.75, 0.0]]
    """
    if kind not in SHIFTS:
        raise ValueError(f"unknown shift kind {kind!r}; choose one of {', '.join(SHIFTS)}")
    check_tensor("inputs", inputs, min_dim=2)
    x = inputs.detach()
    device = x.device if generator is None else generator.device
    if kind == "inverted":
        return 1.0 - x
    if kind == "noise":
        return torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    if kind == "shuffled":
        flat = x.flatten(1)
        keys = torch.rand(flat.shape, generator=generator, device=device).to(x.device)
        return flat.gather(1, keys.argsort(dim=1)).reshape(x.shape)
    epsilon = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return (x + GAUSSIAN_SHIFT_SCALE * epsilon.to(x.device)).clamp(0.0, 1.0)


def ood_auroc(in_scores: Tensor | np.ndarray, out_scores: Tensor | np.ndarray) -> float:
    r"""Area under the ROC curve of a score, in-distribution inputs being the positive class.

    It equals the Mann–Whitney statistic (Hanley & McNeil 1982), ties counting one half:

    .. math::

        \mathrm{AUROC} = \frac{1}{m n} \sum_{i=1}^{m} \sum_{j=1}^{n}
        \Big( [s_i^{in} > s_j^{out}] + \tfrac12 [s_i^{in} = s_j^{out}] \Big).

    1 means every in-distribution input outscores every out-of-distribution one, 0.5 is chance.
    Computed with :func:`sklearn.metrics.roc_auc_score`.

    :param in_scores: ``[m]`` scores of in-distribution inputs (higher = more in-distribution).
    :param out_scores: ``[n]`` scores of out-of-distribution inputs.
    :returns: the AUROC in :math:`[0, 1]`.
    :raises ValueError: for empty or non-finite score sets.

    Example::

        >>> ood_auroc(torch.tensor([3.0, 2.0]), torch.tensor([1.0, 2.0]))  # (1 + 1 + 1 + 1/2) / 4
        0.875
    """
    from sklearn.metrics import roc_auc_score

    positive = _as_numpy("in_scores", in_scores, 1).astype(np.float64)
    negative = _as_numpy("out_scores", out_scores, 1).astype(np.float64)
    if positive.size == 0 or negative.size == 0:
        raise ValueError("in_scores and out_scores must both be non-empty")
    if not (np.isfinite(positive).all() and np.isfinite(negative).all()):
        raise ValueError("in_scores and out_scores must be finite (no NaN or inf)")
    labels = np.concatenate([np.ones(positive.size), np.zeros(negative.size)])
    return float(roc_auc_score(labels, np.concatenate([positive, negative])))


def ood_table(
    energy: Callable[[Tensor], Tensor],
    test_inputs: Tensor,
    kinds: Iterable[str] = SHIFTS,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    r"""AUROC of the score :math:`s(x) = -\lVert \nabla_x E(x) \rVert_2` for each shift.

    The in-distribution set is ``test_inputs``; each out-of-distribution set is
    ``shifted_digits(test_inputs, kind, generator)`` (paper 001, Table 5, with shifted digits in
    place of other data sets). See :func:`score_norm` and :func:`ood_auroc`.

    :param callable energy: maps ``[n, *shape]`` inputs to ``[n]`` energies.
    :param torch.Tensor test_inputs: ``[n, *shape]`` in-distribution images in :math:`[0, 1]`.
    :param kinds: names from :data:`SHIFTS`, in the order of the returned dictionary.
    :param torch.Generator generator: randomness of the shifts (the global one when ``None``).
    :param int batch_size: inputs per backward pass of :func:`score_norm`.
    :returns: ``{kind: AUROC}``.
    :raises ValueError: for an unknown kind, before any score is computed.

    Example::

        Constant images sit at the mode of this energy; shuffling leaves them unchanged:

        >>> def energy(x):
        ...     return 0.5 * (x - 0.2).pow(2).sum(-1)
        >>> table = ood_table(energy, torch.full((30, 4), 0.2),
        ...                   generator=torch.Generator().manual_seed(0))
        >>> {kind: round(auroc, 3) for kind, auroc in table.items()}
        {'noise': 1.0, 'inverted': 1.0, 'shuffled': 0.5, 'gaussian': 1.0}
    """
    kinds = tuple(kinds)
    unknown = [kind for kind in kinds if kind not in SHIFTS]
    if unknown:
        raise ValueError(f"unknown shift kind(s) {unknown}; choose from {', '.join(SHIFTS)}")
    in_scores = score_norm(energy, test_inputs, batch_size)
    return {
        kind: ood_auroc(
            in_scores,
            score_norm(energy, shifted_digits(test_inputs, kind, generator), batch_size),
        )
        for kind in kinds
    }


def plot_image_grid(
    images: Tensor | np.ndarray,
    path: str | Path,
    rows: int | None = None,
    title: str | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Path:
    r"""Save grayscale images as a grid in a PNG (matplotlib's Agg renderer, no pyplot state).

    Flat images ``[n, d]`` are shown as squares of side :math:`\sqrt d` (``[n, 64]`` digits as
    8×8); ``[n, h, w]`` images are shown as they are. The grid has ``rows`` rows
    (:math:`\lceil \sqrt n \rceil` by default) and :math:`\lceil n / \text{rows} \rceil` columns.
    The parent folders of ``path`` are created and the file is written atomically.

    :param images: ``[n, d]`` with ``d`` a perfect square, or ``[n, h, w]``.
    :param path: where to write the PNG.
    :param int rows: number of rows of the grid.
    :param str title: title above the grid.
    :param value_range: pixel values mapped to black and white.
    :returns: ``path`` as a :class:`~pathlib.Path`.
    :raises ValueError: for an empty set, a flat width that is not a square, or another shape.

    Example::

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = plot_image_grid(torch.rand(6, 64), Path(folder) / "a" / "grid.png", rows=2)
        ...     print(path.name, path.read_bytes()[1:4])
        grid.png b'PNG'
    """
    from matplotlib.figure import Figure

    pixels = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    pixels = pixels.astype(np.float64)
    if pixels.ndim == 2:
        side = math.isqrt(pixels.shape[1])
        if side * side != pixels.shape[1]:
            raise ValueError(
                f"flat images must have a square number of pixels, got {pixels.shape[1]}"
            )
        pixels = pixels.reshape(-1, side, side)
    if pixels.ndim != 3 or pixels.shape[0] == 0:
        raise ValueError(
            f"images must have shape [n, d] or [n, h, w] with n > 0, got {pixels.shape}"
        )
    n = pixels.shape[0]
    rows = math.ceil(math.sqrt(n)) if rows is None else rows
    check_positive_integer("rows", rows)
    low, high = value_range
    check_positive("value_range width", high - low)
    rows = min(rows, n)
    columns = math.ceil(n / rows)
    figure = Figure(figsize=(1.1 * columns, 1.1 * rows + (0.4 if title else 0.0)))
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.ravel()):
        axis.set_axis_off()
        if index < n:
            axis.imshow(pixels[index], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    if title:
        figure.suptitle(title)
    return write_figure(Path(path), figure)
