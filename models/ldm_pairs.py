r"""Latent distribution matching for pairs of views (Mikulasch & Zenke, §5 and Appendix A.6.1).

A deterministic encoder :math:`f` maps two views of an example to latents :math:`z_1 = f(x_1)`,
:math:`z_2 = f(x_2)`, whose joint law :math:`q` the data induce. LDM fits :math:`q` to a latent
model :math:`p(z_1, z_2) = p(z_1)\, p(z_2 \mid z_1)` by maximizing

.. math::

    G = \mathbb{E}_q[\log p(z_1) + \log p(z_2 \mid z_1)] + H_q(z_1, z_2)
      = -\mathrm{KL}(q \,\|\, p),

and the variant "with MI" (Aitchison & Ganev) adds the mutual information of the pair,

.. math::

    G_{\mathrm{MI}} = G + I_q(z_1; z_2) = \mathbb{E}_q[\log p(z_1) + \log p(z_2 \mid z_1)]
      + H_q(z_1) + H_q(z_2).

Two latent spaces (the restored equations of paper 004):

* **plane**: :math:`p(z_1)` flat (improper), :math:`\log p(z_2 \mid z_1) = -\beta \,
  \mathrm{mean}_d (z_1 - z_2)^2 + \text{const}`, a Gaussian of variance :math:`d / (2\beta)` per
  coordinate — the VICReg-like model (eq. 7–9, 39–43);
* **sphere**: latents normalized, :math:`p(z_1)` uniform on :math:`S^{d-1}`,
  :math:`p(z_2 \mid z_1) = \mathrm{vMF}(z_2; z_1, \beta)` — the SimCLR-like model (eq. 10–11,
  44–48).

The entropies are estimated from the batch (:mod:`thermossl.objectives.entropy`: KDE, kNN or
LogDet). The program declares the model's densities as observed sites and the estimates as named
factors, so :func:`~thermossl.objectives.derive_bound` returns

.. math::

    \mathcal{L} = \underbrace{\textstyle\sum_i \log p(z_{1i})}_{\texttt{z1}}
      + \underbrace{\textstyle\sum_i \log p(z_{2i} \mid z_{1i})}_{\texttt{z2}}
      + \underbrace{N \hat H(z_1, z_2)}_{\texttt{entropy}}
      \; \Big[ + \underbrace{N (\hat H(z_1) + \hat H(z_2) - \hat H(z_1, z_2))}_{
      \texttt{mutual\_information}} \Big],

:math:`N` the number of pairs, so ``bound.total / N`` estimates :math:`G` (or :math:`G_{\mathrm{MI}}`)
per pair. The MI term uses the same estimator as the joint entropy, so with MI the joint estimate
cancels exactly, in value and gradient.

**Correspondences** (tests in ``tests/models/test_ldm_pairs.py``):

* SimCLR: on the sphere, with MI, a leave-one-out vMF-kernel KDE of concentration :math:`1/\tau`
  on the pooled :math:`2N` latents (``pooled_marginals=True``) and a vMF conditional of
  concentration :math:`2/\tau`,
  :math:`\mathcal{L}/N = -2\,\ell_{\mathrm{NT\text{-}Xent}}(\tau) + \text{const}` exactly.
  The factor 2 is the two marginal entropies :math:`H(z_1) + H(z_2)` that NT-Xent's single
  uniformity term stands for; as the paper notes, SimCLR's negatives include the positive, which
  i.i.d. kernel centres would not.
* VICReg: on the plane, with MI and LogDet entropies,
  :math:`\mathcal{L}/N = -\beta\,\mathrm{MSE}(z_1, z_2) + \tfrac12\log\det\hat\Sigma_1 +
  \tfrac12\log\det\hat\Sigma_2 + \text{const}`: the invariance term is VICReg's exactly, and for
  standardized latents the log-determinants expand to VICReg's covariance penalty,
  :math:`\tfrac12 \log\det \hat\Sigma = -\tfrac d4\, c(Z) + O(\rho^3)` with
  :math:`c(Z) = \tfrac1d \sum_{k \ne l} \hat\Sigma_{kl}^2` (eq. 42).

.. warning:: The entropy estimate is a *batch* statistic: the bound scales it by the batch size
    :math:`N` and is not a sum of independent per-pair terms. Subsampling plates do not apply;
    pass each minibatch as the whole data of one step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import pyro_method
from thermossl.models.two_view import TwoViewProgram
from thermossl.objectives.entropy import kde_entropy, knn_entropy, logdet_entropy
from torch import Tensor, nn

from thermossl._validation import check_positive
from thermossl.distributions import UniformSphere, VonMisesFisher

__all__ = ["ENTROPY_ESTIMATORS", "LATENT_SPACES", "PairLDM"]

#: Latent spaces of the pair model: Gaussian conditional on the plane, vMF on the sphere.
LATENT_SPACES = ("plane", "sphere")

#: Entropy estimators by name (options such as ``k`` or ``bandwidth`` go in ``entropy_options``).
ENTROPY_ESTIMATORS: dict[str, Callable[..., Tensor]] = {
    "kde": kde_entropy,
    "knn": knn_entropy,
    "logdet": logdet_entropy,
}


class PairLDM(TwoViewProgram):
    r"""The LDM goal for pairs of views as a Pyro program (see the module docstring for the math).

    :param torch.nn.Module encoder: :math:`f`, mapping a batch of views to ``[N, d]``.
    :param str space: ``"plane"`` (Gaussian conditional, flat prior) or ``"sphere"`` (latents
        normalized, vMF conditional, uniform prior).
    :param entropy: ``"kde"``, ``"knn"``, ``"logdet"``, or a callable ``[N, d] -> scalar`` in
        nats per sample.
    :param bool mutual_information: add the MI term (the goal :math:`G_{\mathrm{MI}}`).
    :param float concentration: :math:`\beta > 0` of the conditional (the paper's reference runs
        use 5, "like" a temperature of 0.2).
    :param dict entropy_options: keyword arguments for a named estimator. For ``"kde"`` the
        ``bandwidth`` is required; on the sphere the kernel defaults to von Mises–Fisher.
    :param bool pooled_marginals: estimate :math:`H(z_1) + H(z_2)` as :math:`2 \hat H` of the
        :math:`2N` pooled latents (both views share one marginal law) instead of one estimate per
        view; this is the reading under which SimCLR is recovered exactly.

    Sample sites: ``z1`` and ``z2`` (observed, in plate ``pairs``), factors ``entropy`` and, with
    MI, ``mutual_information``.

    Example: identical views on the sphere lose nothing to the conditional, so the bound per pair
    is :math:`\log C_d(\beta) - \log|S^{d-1}|` plus the entropy estimate::

        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> program = PairLDM(nn.Identity(), space="sphere", entropy="knn")
        >>> x = torch.randn(64, 3, dtype=torch.float64)
        >>> bound = program.bound(x, x)
        >>> list(bound.terms)
        ['z1', 'z2', 'entropy']
    """

    def __init__(
        self,
        encoder: nn.Module,
        space: str = "plane",
        entropy: str | Callable[[Tensor], Tensor] = "knn",
        mutual_information: bool = False,
        concentration: float = 5.0,
        entropy_options: Mapping | None = None,
        pooled_marginals: bool = False,
    ):
        super().__init__()
        if space not in LATENT_SPACES:
            raise ValueError(f"space must be one of {LATENT_SPACES}, got {space!r}")
        check_positive("concentration", concentration)
        options = dict(entropy_options or {})
        if isinstance(entropy, str):
            if entropy not in ENTROPY_ESTIMATORS:
                raise ValueError(
                    f"entropy must be one of {sorted(ENTROPY_ESTIMATORS)} or a callable, "
                    f"got {entropy!r}"
                )
            if entropy == "kde":
                if "bandwidth" not in options:
                    raise ValueError("entropy_options must give a 'bandwidth' for entropy='kde'")
                if space == "sphere":
                    options.setdefault("kernel", "von_mises_fisher")
            self.entropy_name = entropy
            estimator = partial(ENTROPY_ESTIMATORS[entropy], **options)
        elif callable(entropy):
            if options:
                raise ValueError("entropy_options apply to named estimators only")
            self.entropy_name = getattr(entropy, "__name__", "custom")
            estimator = entropy
        else:
            raise TypeError(f"entropy must be a name or a callable, got {type(entropy).__name__}")
        self.encoder = encoder
        self.space = space
        self.mutual_information = bool(mutual_information)
        self.concentration = float(concentration)
        self.pooled_marginals = bool(pooled_marginals)
        self._estimate_entropy = estimator

    def latents(self, x: Tensor) -> Tensor:
        r""":math:`z = f(x)` on the plane, :math:`f(x) / \|f(x)\|` on the sphere; ``[N, d]``."""
        z = self.encoder(x)
        if z.dim() != 2:
            raise ValueError(f"the encoder must return [N, d] latents, got shape {tuple(z.shape)}")
        if self.space == "sphere":
            z = z / z.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny)
        return z

    def prior(self, z1: Tensor) -> dist.Distribution:
        """:math:`p(z_1)`: flat on the plane (log-density 0), uniform on the sphere."""
        d = z1.shape[-1]
        if self.space == "sphere":
            return UniformSphere(d, dtype=z1.dtype).expand(z1.shape[:-1])
        return dist.ImproperUniform(dist.constraints.real_vector, z1.shape[:-1], (d,))

    def conditional(self, z1: Tensor) -> dist.Distribution:
        r""":math:`p(z_2 \mid z_1)`: Gaussian of variance :math:`d / (2\beta)` per coordinate on the
        plane, so that its log-density is :math:`-\beta\,\mathrm{mean}_d (z_1 - z_2)^2 +
        \text{const}`; vMF of concentration :math:`\beta` on the sphere."""
        d = z1.shape[-1]
        if self.space == "sphere":
            return VonMisesFisher(z1, self.concentration)
        scale = (d / (2 * self.concentration)) ** 0.5
        return dist.Normal(z1, scale).to_event(1)

    def entropies(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor | None]:
        r""":math:`\hat H(z_1, z_2)` and, with MI, :math:`\hat H(z_1) + \hat H(z_2)` (nats)."""
        joint = self._estimate_entropy(torch.cat([z1, z2], dim=-1))
        if not self.mutual_information:
            return joint, None
        if self.pooled_marginals:
            marginals = 2 * self._estimate_entropy(torch.cat([z1, z2], dim=0))
        else:
            marginals = self._estimate_entropy(z1) + self._estimate_entropy(z2)
        return joint, marginals

    @pyro_method
    def model(self, x1: Tensor, x2: Tensor) -> None:
        r""":math:`z_1 \sim p(z_1)`, :math:`z_2 \mid z_1 \sim p(z_2 \mid z_1)`, both observed at
        the encoder's latents, and the entropy (and MI) estimates as factors scaled by :math:`N`."""
        self.check_inputs(x1, x2)
        z1, z2 = self.latents(x1), self.latents(x2)
        count = z1.shape[0]
        with pyro.plate("pairs", count):
            pyro.sample("z1", self.prior(z1), obs=z1)
            pyro.sample("z2", self.conditional(z1), obs=z2)
        joint, marginals = self.entropies(z1, z2)
        pyro.factor("entropy", count * joint)
        if marginals is not None:
            pyro.factor("mutual_information", count * (marginals - joint))

    @pyro_method
    def guide(self, x1: Tensor, x2: Tensor) -> None:
        """No latent sites: the encoder is deterministic and every latent is observed."""
        self.check_inputs(x1, x2)
