r"""Bias and spread of the entropy estimators of :mod:`thermossl.objectives.entropy`.

For two distributions with a closed-form entropy,

* ``gaussian``: :math:`N(0, \Sigma)` with :math:`\Sigma_{ij} = 4 \cdot 0.5^{|i - j|}` (scale 2,
  AR(1) correlation 0.5; :math:`H = \tfrac d2 (1 + \log 2\pi) + \tfrac12 \log\det\Sigma`),
* ``box``: uniform on :math:`[-2, 2]^d` (:math:`H = d \log 4`),

and :math:`d \in \{1, 2, 8, 32\}`, :math:`n \in \{256, 2048\}`, every estimator is run on
``--repeats`` independent draws and the table reports the truth, the bias (mean - truth), the
relative bias and the standard deviation over draws:

* ``knn``: Kozachenko-Leonenko, k = 3, all constants;
* ``knn-clip0.9``: the same with the distances above their 90 % quantile clipped (the paper's
  training variant, biased downward by construction);
* ``kde-silverman``: Gaussian-kernel resubstitution KDE with Silverman's rule
  :math:`h = \bar\sigma \, (4 / ((d + 2) n))^{1/(d + 4)}`, :math:`\bar\sigma^2` the mean marginal
  sample variance;
* ``logdet``: Gaussian plug-in with the unbiased sample covariance (its exact Gaussian bias,
  ``logdet_entropy_bias``, is printed in the last column for the Gaussian rows).

Two further rows score the stop-gradient plug-in on a Gaussian conditional
:math:`z_2 = 0.8 z_1 + \varepsilon`, :math:`z_1 \sim N(0, \Sigma)`, :math:`\varepsilon \sim
N(0, \Sigma)`, whose truth is :math:`H(z_2 \mid z_1) = H(N(0, \Sigma))`: with the true conditional
as predictor (unbiased), and with the context-free marginal of :math:`z_2` as predictor (an upper
bound, off by :math:`I(z_1; z_2)`).

Run: python benchmarks/entropy_estimators.py [--repeats 20 --seed 0 --dims 1 2 8 32 --sizes 256 2048]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable

import torch
from thermossl.objectives.entropy import (
    gaussian_entropy,
    kde_entropy,
    knn_entropy,
    logdet_entropy,
    logdet_entropy_bias,
    plugin_conditional_entropy,
    uniform_box_entropy,
)
from torch import Tensor
from torch.distributions import MultivariateNormal

DTYPE = torch.float64
SCALE, CORRELATION, HALF_SIDE, COUPLING = 2.0, 0.5, 2.0, 0.8


def ar1_covariance(dim: int) -> Tensor:
    """``4 * 0.5 ** |i - j|``: a non-diagonal covariance with a closed-form determinant."""
    index = torch.arange(dim, dtype=DTYPE)
    return SCALE**2 * CORRELATION ** (index[:, None] - index[None, :]).abs()


def silverman_bandwidth(z: Tensor) -> float:
    """Silverman's rule of thumb for a scalar bandwidth in ``d`` dimensions."""
    num_samples, dim = z.shape
    sigma = float(z.var(0).mean().sqrt())
    return sigma * (4.0 / ((dim + 2) * num_samples)) ** (1.0 / (dim + 4))


ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {
    "knn": lambda z: knn_entropy(z, k=3),
    "knn-clip0.9": lambda z: knn_entropy(z, k=3, clip_quantile=0.9),
    "kde-silverman": lambda z: kde_entropy(z, silverman_bandwidth(z)),
    "logdet": logdet_entropy,
}


def sampler(distribution: str, dim: int) -> tuple[Callable[[int, torch.Generator], Tensor], float]:
    """A function drawing ``[n, d]`` samples, and the true entropy."""
    if distribution == "gaussian":
        covariance = ar1_covariance(dim)
        cholesky = torch.linalg.cholesky(covariance)

        def draw(n: int, generator: torch.Generator) -> Tensor:
            return torch.randn(n, dim, generator=generator, dtype=DTYPE) @ cholesky.T

        return draw, float(gaussian_entropy(covariance))

    def draw(n: int, generator: torch.Generator) -> Tensor:
        return HALF_SIDE * (2 * torch.rand(n, dim, generator=generator, dtype=DTYPE) - 1)

    side = torch.full((dim,), HALF_SIDE, dtype=DTYPE)
    return draw, float(uniform_box_entropy(-side, side))


def plugin_rows(dim: int, n: int, repeats: int, generator: torch.Generator) -> dict[str, list]:
    """Plug-in conditional entropy with the true and with a context-free predictor."""
    covariance = ar1_covariance(dim)
    cholesky = torch.linalg.cholesky(covariance)
    marginal = MultivariateNormal(
        torch.zeros(dim, dtype=DTYPE), covariance_matrix=(1 + COUPLING**2) * covariance
    )
    values: dict[str, list] = {"plugin-true-conditional": [], "plugin-marginal-predictor": []}
    for _ in range(repeats):
        z1 = torch.randn(n, dim, generator=generator, dtype=DTYPE) @ cholesky.T
        z2 = COUPLING * z1 + torch.randn(n, dim, generator=generator, dtype=DTYPE) @ cholesky.T
        true_conditional = MultivariateNormal(COUPLING * z1, scale_tril=cholesky)
        values["plugin-true-conditional"].append(
            float(plugin_conditional_entropy(true_conditional, z2))
        )
        values["plugin-marginal-predictor"].append(
            float(plugin_conditional_entropy(marginal.expand((n,)), z2))
        )
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="independent draws per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dims", type=int, nargs="+", default=[1, 2, 8, 32])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()

    print(
        f"repeats={args.repeats} seed={args.seed} dtype=float64 threads={args.threads} "
        f"torch={torch.__version__} python={platform.python_version()} "
        f"machine={platform.machine()}"
    )
    print()
    print(
        "| distribution | d | n | estimator | truth | mean | bias | rel. bias | sd | exact bias |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")

    def row(distribution, dim, n, name, truth, values, exact=None):
        mean = statistics.fmean(values)
        sd = statistics.stdev(values) if len(values) > 1 else math.nan
        bias = mean - truth
        exact_text = f"{exact:+.4f}" if exact is not None else ""
        print(
            f"| {distribution} | {dim} | {n} | {name} | {truth:.4f} | {mean:.4f} | {bias:+.4f} "
            f"| {100 * bias / abs(truth):+.2f} % | {sd:.4f} | {exact_text} |"
        )

    for distribution in ("gaussian", "box"):
        for dim in args.dims:
            draw, truth = sampler(distribution, dim)
            for n in args.sizes:
                values: dict[str, list] = {name: [] for name in ESTIMATORS}
                for _ in range(args.repeats):
                    z = draw(n, generator)
                    for name, estimator in ESTIMATORS.items():
                        values[name].append(float(estimator(z)))
                for name in ESTIMATORS:
                    exact = None
                    if name == "logdet" and distribution == "gaussian" and n > dim:
                        exact = logdet_entropy_bias(n, dim)
                    row(distribution, dim, n, name, truth, values[name], exact)
    for dim in args.dims:
        truth = float(gaussian_entropy(ar1_covariance(dim)))
        for n in args.sizes:
            for name, values in plugin_rows(dim, n, args.repeats, generator).items():
                row("gaussian-conditional", dim, n, name, truth, values)
    print()
    print(f"total time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
