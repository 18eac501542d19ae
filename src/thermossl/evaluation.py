"""What a trained method is judged by: NMI on the test set, the failure modes, the figures.

* **NMI** (paper 001, Tables 2–4): normalized mutual information between the true classes of the
  test set and the method's clusters: the arg max of :math:`p(y \\mid x)` for cluster methods; for
  methods without clusters (SimCLR, Barlow Twins, CorInfoMax), k-means with as many clusters as
  classes, fitted on the training representations.
* **Failure modes**: :func:`thermossl.objectives.failure_modes.diagnose` on the test set and its
  augmentation.
* **Downstream** (paper 001, §6.3): linear-probe accuracy; on digits with an energy, OOD AUROC and
  a grid of model samples (:func:`evaluate_downstream`).
* **Figures** (paper 001, Figures 3 and 5) for two-dimensional data: the test points coloured by
  cluster, and the learned density :math:`p(x; \\Theta) \\propto e^{-E(x)}` as a heat map.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thermossl.inference.langevin import PersistentLangevin, ReplayBufferState
from thermossl.methods import Method
from thermossl.models.datasets import Dataset
from thermossl.objectives.failure_modes import diagnose
from thermossl.runs import write_figure

__all__ = [
    "cluster_assignments",
    "evaluate",
    "evaluate_downstream",
    "plot_clusters_and_density",
]


@contextmanager
def evaluating(method: Method) -> Iterator[Method]:
    """``method`` in evaluation mode (batch norms use their running statistics), without
    gradients; training mode is restored afterwards."""
    method.eval()
    try:
        with torch.no_grad():
            yield method
    finally:
        method.train()


def cluster_assignments(method: Method, data: Dataset, seed: int = 0) -> np.ndarray:
    """The test set's cluster labels under ``method`` (k-means for methods without clusters)."""
    with evaluating(method):
        if method.has_clusters:
            return method.logits(data.test_inputs).argmax(-1).numpy()
        from sklearn.cluster import KMeans

        kmeans = KMeans(n_clusters=data.num_classes, n_init=10, random_state=seed)
        kmeans.fit(method.representation(data.train_inputs).double().numpy())
        return kmeans.predict(method.representation(data.test_inputs).double().numpy())


def evaluate(
    method: Method, data: Dataset, augmentation_noise: float, seed: int = 0
) -> dict[str, Any]:
    """NMI on the test set and, for cluster methods, the failure-mode report."""
    from sklearn.metrics import normalized_mutual_info_score

    if not method.has_clusters:
        assignments = cluster_assignments(method, data, seed)
        return {"nmi": float(normalized_mutual_info_score(data.test_labels.numpy(), assignments))}
    generator = torch.Generator().manual_seed(seed + 1)
    x = data.test_inputs
    x_augmented = x + augmentation_noise * torch.randn(x.shape, generator=generator)
    with evaluating(method):
        logits = method.logits(x)
        report = diagnose(
            method.features(x), logits, method.logits(x_augmented), method.program.prior
        )
    nmi = normalized_mutual_info_score(data.test_labels.numpy(), logits.argmax(-1).numpy())
    return {"nmi": float(nmi), "failure_modes": report._asdict()}


def evaluate_downstream(
    method: Method,
    data: Dataset,
    out: Path,
    *,
    buffer: ReplayBufferState | None = None,
    seed: int = 0,
    sample_steps: int = 500,
    grid_size: int = 64,
) -> dict[str, Any]:
    r"""Linear-probe accuracy of the representation; for image data with an energy, the OOD table
    and a grid of model samples.

    * ``linear_probe``: :func:`~thermossl.downstream.linear_probe_accuracy` of :math:`g(x)`
      (train split fitted, test split scored).
    * ``ood_auroc`` (digits with an energy): AUROC of the score :math:`-\|\nabla_x \log p(x)\|`
      for the test digits against each shift of :data:`~thermossl.downstream.SHIFTS` (paper 001,
      Table 5).
    * ``samples.png`` (digits with an energy): ``grid_size`` chains after ``sample_steps``
      Langevin updates under :math:`p(x; \Theta)`, started from the run's replay buffer when there
      is one (else uniform on the data's box), kept in the box; the step is the method's sampler's
      (Table 7's when the method trains without samples).
    """
    from thermossl.downstream import linear_probe_accuracy, ood_table, plot_image_grid

    with evaluating(method):
        train_features = method.representation(data.train_inputs)
        test_features = method.representation(data.test_inputs)
    results: dict[str, Any] = {
        "linear_probe": linear_probe_accuracy(
            train_features, data.train_labels, test_features, data.test_labels, seed=seed
        )
    }
    if not (method.has_energy and data.name == "digits"):
        return results
    generator = torch.Generator().manual_seed(seed + 2)
    method.eval()
    try:
        results["ood_auroc"] = ood_table(method.energy, data.test_inputs, generator=generator)
        sampler = method.sampler or PersistentLangevin()
        state = (
            buffer if buffer is not None else sampler.init(data.train_inputs, generator=generator)
        )
        start = state.samples[
            torch.randperm(state.samples.shape[0], generator=generator)[:grid_size]
        ]
        samples, _ = sampler.run(
            start,
            method.energy,
            sample_steps,
            generator=generator,
            box=(state.lower, state.upper),
        )
    finally:
        method.train()
    plot_image_grid(
        samples,
        Path(out) / "samples.png",
        title=f"{method.name}: samples after {sample_steps} Langevin steps",
    )
    return results


def plot_clusters_and_density(
    method: Method, data: Dataset, path: Path, title: str | None = None, resolution: int = 200
) -> Path:
    """Clusters on the test points and, with an energy, the density :math:`e^{-E(x)}/Z` (grid-normalized)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if data.input_shape != (2,):
        raise ValueError(
            f"cluster and density plots need two-dimensional data, got {data.input_shape}"
        )
    x = data.test_inputs.numpy()
    assignments = cluster_assignments(method, data)
    panels = 2 if method.has_energy else 1
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.2), squeeze=False)
    axes = axes[0]
    axes[0].scatter(x[:, 0], x[:, 1], c=assignments, cmap="coolwarm", s=4)
    axes[0].set_title("clusters (test set)")
    if method.has_energy:
        low, high = x.min(0) - 0.5, x.max(0) + 0.5
        u, v = np.meshgrid(*(np.linspace(low[i], high[i], resolution) for i in range(2)))
        grid = torch.as_tensor(np.stack([u.ravel(), v.ravel()], -1), dtype=torch.float32)
        with evaluating(method):
            log_density = -method.energy(grid).double()
        density = torch.softmax(log_density, 0).reshape(u.shape).numpy()
        image = axes[1].pcolormesh(u, v, density, shading="auto", cmap="viridis")
        figure.colorbar(image, ax=axes[1])
        axes[1].set_title(r"learned density $p(x;\Theta)$")
    for axis in axes:
        axis.set_aspect("equal")
    figure.suptitle(title or f"{method.name} on {data.name}")
    figure.tight_layout()
    write_figure(path, figure)
    plt.close(figure)
    return Path(path)
