r"""The SSL methods the experiments train, each a Pyro program (or a published loss) plus networks.

A :class:`Method` owns its networks and answers four questions: the training loss on a batch of
pairs (the negative derived bound per pair, or the published loss where no program is declared),
the representation :math:`g(x)`, the cluster logits where the method has clusters, and the energy
:math:`E(x)` where it has a density. :func:`build_method` makes one by name:

=================  =====================================================================
``gedi``           :class:`~thermossl.models.GEDI`, weights (1, 50, 10) (paper 001, Table 7)
``gedi_no_gen``    GEDI without :math:`\mathcal{L}_{GEN}` (weights (0, 50, 10))
``gedi_no_inv``    GEDI without :math:`\mathcal{L}_{INV}` (weights (1, 0, 10))
``gedi_no_prior``  GEDI without :math:`\mathcal{L}_{PRIOR}` (weights (1, 50, 0))
``jem``            :math:`\mathcal{L}_{GEN}` only (weights (1, 0, 0))
``swav``           :class:`~thermossl.models.ClusterSSL`, Sinkhorn codes, cosine prototypes
``deepcluster``    :class:`~thermossl.models.ClusterSSL`, hard codes
``sela``           :class:`~thermossl.models.ClusterSSL`, Sinkhorn codes iterated to convergence,
                   one direction (self-labelling, Asano et al. 2020)
``byol``           the published BYOL loss, an EMA target network (no program declared)
``simclr``         :class:`~thermossl.models.ContrastiveSSL`, both views (NT-Xent)
``corinfomax``     :class:`~thermossl.models.NegativeFreeSSL`
``barlow``         the published Barlow Twins loss (no program declared)
=================  =====================================================================

Networks (paper 001, Appendix L): the encoder is an MLP with two hidden layers of 100 units
and an output of :math:`h` units (:math:`h = 2` on the two-dimensional sets); the projector has
one hidden layer of 4 units. For the cluster methods the projector's output layer is the
prototype matrix :math:`U^\top`, so :math:`g` is the encoder followed by the projector's hidden
layer. Barlow Twins, BYOL, SwAV and SeLa use batch normalization in every layer, as their papers
require. BYOL's predictor has the projector's shape; its target network follows the online encoder
and projector by an exponential moving average (momentum 0.99) after every optimizer step.

The baselines use ReLU, as Appendix L states. The GEDI family uses leaky ReLU (slope 0.2, the
activation of the paper's own energy networks, Table 8) unless :attr:`MethodSettings.activation`
says otherwise. With ReLU, 2 of 10 GEDI initializations on moons lost every unit of a layer
within 2,000 iterations: constant logits and a constant energy for the rest of the run. A dead
unit also gives the energy no gradient in :math:`x` for the sampler to follow.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from thermossl._validation import check_probability_vector
from thermossl.inference.langevin import PersistentLangevin, ReplayBufferState
from thermossl.inference.quadrature import GridQuadrature
from thermossl.models import ClusterSSL, ContrastiveSSL, GEDIWeights, NegativeFreeSSL
from thermossl.models.gedi import GEDI
from thermossl.objectives import TracedBound, losses

__all__ = [
    "ACTIVATIONS",
    "GEDI_FAMILY",
    "METHODS",
    "NORMALIZERS",
    "Method",
    "MethodSettings",
    "build_method",
]

#: Weights of GEDI and its ablations.
GEDI_FAMILY = {
    "gedi": GEDIWeights(1.0, 50.0, 10.0),
    "gedi_no_gen": GEDIWeights(0.0, 50.0, 10.0),
    "gedi_no_inv": GEDIWeights(1.0, 0.0, 10.0),
    "gedi_no_prior": GEDIWeights(1.0, 50.0, 0.0),
    "jem": GEDIWeights(1.0, 0.0, 0.0),
}

#: How the generative term's log-normalizer is estimated: model samples from the replay-buffer
#: Langevin sampler (paper 001), or quadrature on a grid (data of at most three dimensions).
NORMALIZERS = ("langevin", "quadrature")

#: Hidden-layer activations of the networks, by name.
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2)}

#: Names accepted by :func:`build_method`.
METHODS = (
    *GEDI_FAMILY,
    "swav",
    "deepcluster",
    "sela",
    "simclr",
    "corinfomax",
    "barlow",
    "byol",
)


@dataclass
class MethodSettings:
    r"""Architecture and objective settings shared by the methods.

    ``normalizer`` picks how the generative term's :math:`\log\Gamma` is estimated (one of
    :data:`NORMALIZERS`); ``quadrature_points`` is the grid's points per axis for ``"quadrature"``.
    ``activation`` names the hidden layers' activation (a key of :data:`ACTIVATIONS`); ``None``
    gives each method its default: leaky ReLU for the GEDI family, ReLU for the others.
    ``energy_penalty`` :math:`\alpha \ge 0` adds :math:`\alpha\,(\overline{E(x)^2} +
    \overline{E(\tilde x)^2})` over the batch and the Langevin samples to the loss (Du & Mordatch,
    2019, §3.3), a regularizer outside the bound that keeps the energies' magnitude from
    running away when the sampler lags the model; it applies only with Langevin samples.
    ``label_prior``: :math:`p(y)` of the cluster methods (uniform when ``None``): GEDI's prior
    term, and the label marginal of SwAV's and SeLa's Sinkhorn codes.
    """

    representation_dim: int = 2
    encoder_hidden: int = 100
    projector_hidden: int = 4
    num_clusters: int = 2
    temperature: float = 1.0
    swav_temperature: float = 0.1
    normalizer: str = "langevin"
    quadrature_points: int = 64
    activation: str | None = None
    energy_penalty: float = 0.0
    label_prior: tuple[float, ...] | None = None
    langevin: dict = field(
        default_factory=lambda: {
            "buffer_size": 10_000,
            "reinit_frequency": 0.05,
            "steps": 1,
            "step_size": 0.01**2 / 2,
            "noise_scale": 0.01,
        }
    )

    @classmethod
    def for_data(cls, data: str, **overrides: Any) -> MethodSettings:
        r"""The settings for the data set ``data``, with ``overrides`` applied.

        The two-dimensional sets use the defaults (paper 001, Appendix L). On ``digits``
        (64-pixel images, 10 classes) the 2-unit bottleneck and the 4-unit projector cannot hold
        ten clusters, so the networks are widened (representation 32, hidden 256, projector 64)
        and the sampler takes 20 steps per iteration (Table 9) of size 0.01 with noise 0.005, kept
        in the pixels' box :math:`[0, 1]` (the JEM update of
        :class:`~thermossl.inference.langevin.PersistentLangevin`). Table 9's step of 1 (noise
        0.01), made for ResNet energies, sends this MLP's chains to the box's corners. The
        energies are held in check by ``energy_penalty`` 0.1.

        .. warning:: Without the energy penalty GEDI does not train stably on digits with any of
            these samplers. Measured on seed 0, Table 7's weights and learning rate 10⁻³ (the
            generative term's per-pair value, the sample-data energy gap): step 1 reached 5·10⁹
            by iteration 1,500, step 0.05 1.3·10⁷; step 0.01 with noise 0.005 stayed within ±3
            for 1,500 iterations (NMI 0.33, clusters balanced) but reached 1.4·10⁹ by 3,000, the
            clusters collapsing. At learning rate 10⁻⁴ step 1 kept the gap bounded for 3,000
            iterations, but the clusters did not form (NMI 0.12). With the penalty (0.1, leaky
            ReLU, step 0.01) the gap stayed within ±4.9 (logged every 100 iterations, 5 seeds)
            for 3,000 iterations and the NMI reached 0.38 ± 0.10 (README).

        Example::

            >>> MethodSettings.for_data("digits").representation_dim
            32
            >>> MethodSettings.for_data("moons", normalizer="quadrature").representation_dim
            2
        """
        preset: dict[str, Any] = {}
        if data == "digits":
            preset = {
                "representation_dim": 32,
                "encoder_hidden": 256,
                "projector_hidden": 64,
                "energy_penalty": 0.1,
                "langevin": {
                    "buffer_size": 10_000,
                    "reinit_frequency": 0.05,
                    "steps": 20,
                    "step_size": 0.01,
                    "noise_scale": 0.005,
                    "clip_to_box": True,
                },
            }
        return cls(**{**preset, **overrides})


def mlp(
    sizes: list[int],
    batch_norm: bool = False,
    final_activation: bool = False,
    activation: str = "relu",
) -> nn.Sequential:
    """Linear layers with ``activation`` (a key of :data:`ACTIVATIONS`) between them, and after
    the last when ``final_activation``."""
    make_activation = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        last = index == len(sizes) - 2
        if batch_norm and (not last or final_activation):
            layers.append(nn.BatchNorm1d(fan_out))
        if not last or final_activation:
            layers.append(make_activation())
    return nn.Sequential(*layers)


class Method(nn.Module):
    """Networks, a training loss and the read-outs the metrics need.

    :param str name: the method's name.
    :param nn.Module encoder: the backbone, whose output is the representation.
    :param nn.Module program: the Pyro program (``None`` for ``barlow``).
    :param nn.Module head: the projector of ``barlow`` (``None`` otherwise).
    :param PersistentLangevin sampler: the data-space sampler of the generative term, if any.
    :param float energy_penalty: :attr:`MethodSettings.energy_penalty`.
    :param nn.Module predictor: BYOL's predictor (``None`` otherwise); with it, ``head`` is the
        projector and a frozen copy of encoder and projector is the EMA target.
    :param float target_momentum: the EMA momentum of BYOL's target.
    """

    def __init__(
        self,
        name,
        encoder,
        program=None,
        head=None,
        sampler=None,
        energy_penalty=0.0,
        predictor=None,
        target_momentum=0.99,
    ):
        super().__init__()
        self.predictor = predictor
        self.target_momentum = float(target_momentum)
        self.target = None
        if predictor is not None:
            self.target = copy.deepcopy(nn.Sequential(encoder, head)).requires_grad_(False)
        self.energy_penalty = float(energy_penalty)
        self.name = name
        self.encoder = encoder
        self.program = program
        self.head = head
        self.sampler = sampler
        self._recorded_bounds: dict[tuple, TracedBound] = {}

    @property
    def has_clusters(self) -> bool:
        return isinstance(self.program, ClusterSSL)

    @property
    def has_energy(self) -> bool:
        return isinstance(self.program, GEDI)

    @property
    def needs_samples(self) -> bool:
        return self.has_energy and self.program.weights.generative > 0

    def representation(self, x: Tensor) -> Tensor:
        """The encoder's output, the representation evaluated downstream."""
        return self.encoder(x)

    def logits(self, x: Tensor) -> Tensor:
        """Cluster logits :math:`U^\\top g(x)/\\tau` (cluster methods only)."""
        if not self.has_clusters:
            raise ValueError(f"{self.name} has no clusters")
        return self.program.logits(x)

    def features(self, x: Tensor) -> Tensor:
        """:math:`g(x)`, the input of the prototypes (cluster methods) or the representation."""
        if self.has_clusters:
            return self.program.network(x)
        return self.representation(x)

    def energy(self, x: Tensor) -> Tensor:
        """:math:`E(x) = -\\log\\sum_y e^{U_{:y}^\\top g(x)/\\tau}` (GEDI family only)."""
        if not self.has_energy:
            raise ValueError(f"{self.name} has no energy")
        return self.program.energy(x)

    def loss(
        self, x1: Tensor, x2: Tensor, samples: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """The training loss on a batch of ``n`` pairs and its terms, both per pair.

        For a program: :math:`-\\mathcal{L}/n` with the derived bound's terms (each divided by
        ``n``); for ``barlow``: the published loss.
        """
        n = x1.shape[0]
        if self.predictor is not None:
            (p1, z2), (p2, z1) = self.byol_directions(x1, x2)
            value = (losses.byol(p1, z2) + losses.byol(p2, z1)) / 2
            return value, {"byol": float(value.detach())}
        if self.program is None:
            value = losses.barlow_twins(self.head(self.encoder(x1)), self.head(self.encoder(x2)))
            return value, {"barlow_twins": float(value.detach())}
        bound = self._derived_bound()(x1, x2, *([samples] if self.has_energy else []))
        terms = {name: float(term.detach()) / n for name, term in bound.terms.items()}
        loss = -bound.total / n
        if self.energy_penalty > 0 and self.needs_samples and isinstance(samples, Tensor):
            penalty = self.energy_penalty * (
                self.energy(x1).square().mean() + self.energy(samples).square().mean()
            )
            terms["energy_penalty"] = float(penalty.detach())
            loss = loss + penalty
        return loss, terms

    def byol_directions(self, x1: Tensor, x2: Tensor) -> list[tuple[Tensor, Tensor]]:
        """BYOL's (online prediction, detached target projection) for ``x1 -> x2`` and
        ``x2 -> x1``."""
        if self.predictor is None:
            raise ValueError(f"{self.name} has no predictor")
        online = [self.predictor(self.head(self.encoder(x))) for x in (x1, x2)]
        with torch.no_grad():
            targets = [self.target(x) for x in (x1, x2)]
        return [(online[0], targets[1]), (online[1], targets[0])]

    @torch.no_grad()
    def after_step(self) -> None:
        """Work after each optimizer step: BYOL's target :math:`\\xi \\leftarrow m\\xi +
        (1 - m)\\theta` (parameters; buffers such as batch-norm statistics are copied)."""
        if self.target is None:
            return
        online = nn.Sequential(self.encoder, self.head)
        for target, source in zip(self.target.parameters(), online.parameters(), strict=True):
            target.lerp_(source, 1 - self.target_momentum)
        for target, source in zip(self.target.buffers(), online.buffers(), strict=True):
            target.copy_(source)

    def _derived_bound(self):
        """The function computing the program's derived bound.

        For the GEDI family, a :class:`~thermossl.objectives.TracedBound`: the derivation is
        recorded once and replayed, the same operations without Pyro's per-step interpreter
        work. Its structure depends on the weights (a zero weight removes sites), so there is
        one recording per set of weights. The other programs derive at every step: batch
        normalization's train/eval switch is not an input a recording can see.
        """
        if not self.has_energy:
            return self.program.bound
        weights = tuple(self.program.weights)
        if weights not in self._recorded_bounds:
            self._recorded_bounds[weights] = TracedBound(self.program)
        return self._recorded_bounds[weights]

    def init_sampler(self, data: Tensor, generator: torch.Generator) -> ReplayBufferState | None:
        return self.sampler.init(data, generator=generator) if self.needs_samples else None


def build_method(name: str, input_dim: int, settings: MethodSettings | None = None) -> Method:
    """The method ``name`` (one of :data:`METHODS`) for inputs of ``input_dim`` features.

    :raises ValueError: for an unknown name, listing the valid ones.

    Example::

        >>> method = build_method("gedi", input_dim=2)
        >>> method.has_clusters, method.needs_samples
        (True, True)
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    s = settings or MethodSettings()
    if s.normalizer not in NORMALIZERS:
        raise ValueError(
            f"unknown normalizer {s.normalizer!r}; choose one of {', '.join(NORMALIZERS)}"
        )
    if s.activation is not None and s.activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {s.activation!r}; choose one of {', '.join(ACTIVATIONS)}"
        )
    activation = s.activation or ("leaky_relu" if name in GEDI_FAMILY else "relu")
    h, c = s.representation_dim, s.num_clusters
    prior = None
    if s.label_prior is not None:
        prior = torch.as_tensor(s.label_prior, dtype=torch.float64)
        check_probability_vector("label_prior", prior, size=c)
    batch_norm = name in ("swav", "sela", "barlow", "byol")
    layers = {"batch_norm": batch_norm, "activation": activation}
    encoder = mlp([input_dim, s.encoder_hidden, s.encoder_hidden, h], **layers)
    if name in GEDI_FAMILY:
        network = nn.Sequential(
            encoder, mlp([h, s.projector_hidden], final_activation=True, activation=activation)
        )
        program = GEDI(
            network,
            s.projector_hidden,
            c,
            temperature=s.temperature,
            weights=GEDI_FAMILY[name],
            prior=prior,
        )
        sampler = None
        if GEDI_FAMILY[name].generative > 0:
            sampler = (
                GridQuadrature(s.quadrature_points)
                if s.normalizer == "quadrature"
                else PersistentLangevin(**s.langevin)
            )
        return Method(name, encoder, program, sampler=sampler, energy_penalty=s.energy_penalty)
    if name in ("swav", "deepcluster", "sela"):
        hidden = mlp([h, s.projector_hidden], final_activation=True, **layers)
        program = ClusterSSL(
            nn.Sequential(encoder, hidden),
            s.projector_hidden,
            c,
            temperature=s.swav_temperature,
            auxiliary="hard" if name == "deepcluster" else "sinkhorn",
            normalize=name != "deepcluster",
            symmetric=name != "sela",
            sinkhorn_iterations=None if name == "sela" else 3,
            prior=prior,
        )
        return Method(name, encoder, program)
    projector = mlp([h, s.projector_hidden, h], **layers)
    if name == "byol":
        predictor = mlp([h, s.projector_hidden, h], **layers)
        return Method(name, encoder, head=projector, predictor=predictor)
    if name == "simclr":
        program = ContrastiveSSL(nn.Sequential(encoder, projector), candidates="both_views")
        return Method(name, encoder, program)
    if name == "corinfomax":
        program = NegativeFreeSSL(encoder, h, projector=projector, embedding_dim=h)
        return Method(name, encoder, program)
    return Method(name, encoder, head=projector)
