"""How often does one GEDI initialization find the true partition of moons or circles?

GEDI's bound has local optima: a partition that cuts a moon (or an arc of the outer circle) is
balanced, confident and invariant to small noise, so the invariance and prior terms hold it in
place. This script measures how often a single initialization escapes them, for given settings,
by training a *population* of P independent initializations in lock-step. Each network of
paper 001's Appendix L (encoder 2-100-100-2, projector 2-4, prototypes 4-2) gets a leading
population axis, so one batched matrix product runs all P members. Each member draws its own
initialization, minibatches and augmentation noise. Adam acts elementwise, so one optimizer over
the stacked parameters is P independent optimizers.

The loss of each member is the published form of GEDI's bound (eq. 5, Table 7's weights) per
pair, with the generative term's log-normalizer by quadrature on a grid over the data's box:

    w_GEN (mean_i E(x_i) + log sum_j exp(-E(g_j)) + log cell)
    + w_INV mean_i CE(p(y | x'_i), p(y | x_i)) + w_PRIOR CE(uniform, mean_i p(y | x_i)).

``tests/test_examples.py`` checks it equal, in value and gradient, to the loss
``thermossl.methods.Method.loss`` derives from the Pyro program. The library trains one run at
a time; this script exists to count successes over many initializations at a tenth of the cost.

Run:  python examples/gedi_initializations.py --data circles --population 10 \
          --iterations 20000 --learning-rate 3e-3                  (about 17 min on one core)
      python examples/gedi_initializations.py --population 2 --iterations 3 --report-every 3
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import torch
import torch.nn.functional as F
from sklearn.metrics import normalized_mutual_info_score
from thermossl.inference.quadrature import GridQuadrature
from thermossl.models.datasets import load_dataset
from torch import Tensor

from thermossl.methods import ACTIVATIONS

LAYER_SIZES = (2, 100, 100, 2, 4, 2)  # encoder, projector's hidden layer, prototypes
REPRESENTATION = 2  # the encoder's output layer: no activation
PROTOTYPES = len(LAYER_SIZES) - 2  # the last layer: U^T, no bias, no activation


def initial_parameters(population: int, generator: torch.Generator | None = None) -> list[Tensor]:
    """Weights ``[P, fan_in, fan_out]`` and biases ``[P, 1, fan_out]``, drawn as ``nn.Linear``
    draws them (uniform on ±1/sqrt(fan_in)); the prototype layer has no bias."""
    parameters = []
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(LAYER_SIZES)):
        bound = 1 / math.sqrt(fan_in)
        shapes = [(population, fan_in, fan_out)]
        if layer < PROTOTYPES:
            shapes.append((population, 1, fan_out))
        for shape in shapes:
            draw = torch.rand(shape, generator=generator) * 2 - 1
            parameters.append((bound * draw).requires_grad_())
    return parameters


def logits(parameters: list[Tensor], x: Tensor, activation: str, temperature: float) -> Tensor:
    """:math:`U^\\top g(x) / \\tau` for every member: ``x`` is ``[P, n, 2]``, the result ``[P, n, 2]``."""
    act = ACTIVATIONS[activation]()
    h, index = x, 0
    for layer in range(len(LAYER_SIZES) - 1):
        weight = parameters[index]
        if layer < PROTOTYPES:
            h = torch.baddbmm(parameters[index + 1], h, weight)
            h = h if layer == REPRESENTATION else act(h)
            index += 2
        else:
            h = torch.bmm(h, weight)
    return h / temperature


def population_loss(
    parameters: list[Tensor],
    x1: Tensor,
    x2: Tensor,
    grid_points: Tensor,
    log_cell_volume: float,
    weights: tuple[float, float, float] = (1.0, 50.0, 10.0),
    activation: str = "leaky_relu",
    temperature: float = 1.0,
) -> Tensor:
    """The negative bound per pair of every member, ``[P]`` (the published form above)."""
    w_gen, w_inv, w_prior = weights
    logits1 = logits(parameters, x1, activation, temperature)
    log_p1 = F.log_softmax(logits1, dim=-1)
    log_p2 = F.log_softmax(logits(parameters, x2, activation, temperature), dim=-1)
    invariance = -(log_p2.exp() * log_p1).sum(-1).mean(-1)
    log_marginal = torch.logsumexp(log_p1, dim=1) - math.log(x1.shape[1])
    prior = -log_marginal.mean(-1)  # CE(uniform, q̄)
    loss = w_inv * invariance + w_prior * prior
    if w_gen > 0:
        energy = -torch.logsumexp(logits1, dim=-1)
        grid = grid_points.expand(x1.shape[0], -1, -1)
        grid_energy = -torch.logsumexp(logits(parameters, grid, activation, temperature), dim=-1)
        log_normalizer = torch.logsumexp(-grid_energy, dim=-1) + log_cell_volume
        loss = loss + w_gen * (energy.mean(-1) + log_normalizer)
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="moons", choices=("moons", "circles"))
    parser.add_argument("--population", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--activation", default="leaky_relu", choices=tuple(ACTIVATIONS))
    parser.add_argument("--augmentation-noise", type=float, default=0.03)
    parser.add_argument("--quadrature-points", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=400)
    parser.add_argument("--report-every", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_dataset(args.data, 0)
    inputs, test_inputs = data.train_inputs.float(), data.test_inputs.float()
    grid = GridQuadrature(args.quadrature_points).init(inputs)
    parameters = initial_parameters(args.population, torch.Generator().manual_seed(args.seed))
    generator = torch.Generator().manual_seed(args.seed + 1)  # minibatches and augmentation
    optimizer = torch.optim.Adam(parameters, lr=args.learning_rate)
    began = time.perf_counter()
    for iteration in range(1, args.iterations + 1):
        index = torch.randint(
            inputs.shape[0], (args.population, args.batch_size), generator=generator
        )
        x1 = inputs[index]
        x2 = x1 + args.augmentation_noise * torch.randn(x1.shape, generator=generator)
        losses = population_loss(
            parameters, x1, x2, grid.points, grid.log_cell_volume, activation=args.activation
        )
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # members share no parameters: each gets its own gradient
        optimizer.step()
        if iteration % args.report_every == 0 or iteration == args.iterations:
            with torch.no_grad():
                test = test_inputs.expand(args.population, -1, -1)
                labels = logits(parameters, test, args.activation, 1.0).argmax(-1)
            scores = [normalized_mutual_info_score(data.test_labels, row) for row in labels]
            found = sum(score >= 0.95 for score in scores)
            print(
                f"iteration {iteration} ({time.perf_counter() - began:.0f} s): "
                f"{found}/{args.population} initializations at NMI >= 0.95",
                flush=True,
            )
            print("  NMI  ", " ".join(f"{score:.2f}" for score in scores))
            print("  loss ", " ".join(f"{float(loss):.2f}" for loss in losses.detach()))


if __name__ == "__main__":
    main()
