r"""Figures of TherML's toy in the layout of its Figure 3 (paper 003, Appendix B).

Top: data space, :math:`p(x)` (exact, and the training histogram), the model's generative
:math:`q(x) = \sum_z q(z) q(x \mid z)` and the reconstruction
:math:`d(x) = \sum_{x'} \hat p(x') \sum_z q(z \mid x') q(x \mid z)`. Middle: latent space,
:math:`q(z)`, the induced :math:`e(z) = \sum_x \hat p(x) q(z \mid x)` and its class-conditional
parts :math:`e(z_0)`, :math:`e(z_1)`. Bottom: the matrices :math:`q(z \mid x)`,
:math:`q(x \mid z)` and :math:`q(x' \mid x) = \sum_z q(z \mid x) q(x' \mid z)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from thermossl.models.therml import CategoricalWorlds, ToyData, ToyWorlds, toy_joint
from thermossl.runs import write_figure

__all__ = ["toy_figure"]


def toy_figure(
    worlds: CategoricalWorlds, data: ToyData, path: Path, title: str = "", draws: int = 256
) -> Path:
    """Draw the five panels for ``worlds`` trained on ``data`` and save them as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noise = None
    if isinstance(worlds, ToyWorlds):
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(draws, worlds.encoder_bias.shape[0], generator=generator)
    with torch.no_grad():
        tables = {name: table.double() for name, table in worlds.tables(noise).items()}
    encoder, marginal, decoder = (
        tables[name].numpy() for name in ("encoder", "marginal", "decoder")
    )
    empirical = data.joint.numpy()  # [X, 2]
    p_x = empirical.sum(1)
    bins = np.arange(p_x.shape[0])
    induced = p_x[:, None] * encoder  # [X, K]

    figure = plt.figure(figsize=(12, 7.5), layout="constrained")
    grid = figure.add_gridspec(3, 3, height_ratios=[1, 1, 1.6])
    space = figure.add_subplot(grid[0, :])
    space.bar(bins, p_x, color="0.85", label="training data")
    space.plot(bins, toy_joint().sum(1).numpy(), "k-", label="p(x) exact")
    space.plot(bins, marginal @ decoder, "C0.-", label="q(x) model")
    space.plot(bins, induced.sum(0) @ decoder, "C3.--", label="d(x) reconstruction")
    space.set(xlabel="x (bin)", ylabel="probability")
    space.legend(fontsize=8, ncols=4)
    latent = figure.add_subplot(grid[1, :])
    positions = np.arange(marginal.shape[0])
    latent.bar(positions, marginal, color="0.85", label="q(z)")
    latent.plot(positions, induced.sum(0), "k.-", label="e(z)")
    for label, colour in ((0, "purple"), (1, "goldenrod")):
        part = empirical[:, label] @ encoder
        latent.plot(
            positions, part / max(part.sum(), 1e-300), ".-", color=colour, label=f"e(z{label})"
        )
    latent.set(xlabel="z", ylabel="probability")
    latent.legend(fontsize=8, ncols=4)
    for column, (matrix, name, axes) in enumerate(
        (
            (encoder.T, "q(z|x)", ("x", "z")),
            (decoder.T, "q(x|z)", ("z", "x")),
            ((encoder @ decoder).T, "q(x'|x)", ("x", "x'")),
        )
    ):
        panel = figure.add_subplot(grid[2, column])
        panel.imshow(matrix, origin="lower", cmap="viridis", aspect="auto")
        panel.set(title=name, xlabel=axes[0], ylabel=axes[1])
    if title:
        figure.suptitle(title)
    try:
        return write_figure(path, figure)
    finally:
        plt.close(figure)
