r"""TherML's laws measured on the toy of Appendix B (paper 003, §1.2 and §3).

Two checks, each on numbers from the derived functionals:

* **Inequalities** (eq. 11–12) for every trained model of a frontier run
  (:func:`frontier_bounds`): per example,

  .. math::

      R + D \ge H(X) + I(Z; \Theta \mid X), \qquad R + C + D + S/N \ge H(X, Y),

  with exact entropies of the training set's empirical law and of the exact law. The second is
  eq. 11 with :math:`\mathrm{KL}(p \,\|\, Q) \ge 0` dropped and :math:`I(X; Y; \Phi) = 0`: the
  toy's data process is fixed, so :math:`\Phi` is a point mass. Its gap is exactly
  :math:`\mathrm{KL}(p \,\|\, Q) / N`.

* **The equilibrium surface** (:class:`ToyEquilibrium` with
  :mod:`thermossl.objectives.therml_laws`): the envelope relations, the Hessian's symmetry and
  sign, the Maxwell relations and the first law, by finite differences of re-equilibrated models.

.. warning:: Equilibria are those of the **common-noise** objective: the average over
    :math:`\theta` uses :attr:`LawsConfig.parameter_draws` fixed standard-normal draws, so that
    :math:`J` is a deterministic function of the 184 parameters and L-BFGS can drive its gradient
    to zero. Every law holds for that surface exactly as for the expectation's (it is still a
    minimum of functions affine in the multipliers).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from thermossl._validation import check_positive, check_positive_integer
from thermossl.models.therml import HandCraftedToy, ToyData, ToyWorlds, toy_data
from thermossl.objectives.therml import (
    Functionals,
    Multipliers,
    conditional_information,
    entropy,
    functionals,
    objective,
)
from thermossl.objectives.therml_laws import (
    SurfacePoint,
    first_law,
    maxwell_relations,
    surface_derivatives,
)
from thermossl.objectives.traced import TracedBound
from thermossl.runs import environment, write_json
from thermossl.therml_toy import HAND_CRAFTED, TOY_PRESETS, ToyConfig

__all__ = ["LawsConfig", "ToyEquilibrium", "frontier_bounds", "markdown_laws", "run_toy_laws"]


# Inequalities on trained models -------------------------------------------------------------------


def model_bounds(
    worlds: ToyWorlds | HandCraftedToy, data: ToyData, num_examples: int, noise: torch.Tensor | None
) -> dict[str, float]:
    r"""Both sides of eq. 12 and eq. 11 (per example) for one model on one data law.

    :param noise: ``[P, K]`` common parameter draws (``None`` for a model without :math:`\theta`);
        the functionals and :math:`I(Z; \Theta \mid X)` are computed at the same draws.
    :returns: ``R+D``, ``H(X)+I(Z;Theta|X)``, ``R+C+D+S/N``, ``H(X,Y)`` and the two gaps
        (left minus right, each :math:`\ge 0` if the law holds).
    """
    arguments = (*data.cells(), num_examples) + (() if noise is None else (noise,))
    with torch.no_grad():
        values = functionals(worlds.model, worlds.guide, *arguments, num_examples=num_examples)
        encoder = worlds.encoder_draws(noise).double()
    floats = values.as_floats()
    entropy_term = floats["S"] or 0.0
    p_x = data.joint.sum(-1)
    left_12 = floats["R"] + floats["D"]
    right_12 = float(entropy(p_x) + conditional_information(encoder, p_x))
    left_11 = floats["R"] + floats["C"] + floats["D"] + entropy_term
    right_11 = float(entropy(data.joint))
    return {
        "R+D": left_12,
        "H(X)+I(Z;Theta|X)": right_12,
        "eq12_gap": left_12 - right_12,
        "R+C+D+S/N": left_11,
        "H(X,Y)": right_11,
        "eq11_gap": left_11 - right_11,
    }


def frontier_bounds(folder: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Eq. 11–12 for every model of a ``thermossl frontier`` run folder, on both data laws.

    Reads ``FOLDER/config.json`` and each preset's ``model.pt``; the parameter draws are
    :func:`~thermossl.therml_toy.evaluate_toy`'s, so the functionals equal ``metrics.json``'s.

    :raises FileNotFoundError: when the folder holds no finished frontier run.
    :returns: ``{preset: {"train" | "exact": model_bounds(...)}}``.
    """
    folder = Path(folder)
    settings = json.loads((folder / "config.json").read_text())
    fields = ToyConfig.__dataclass_fields__
    config = ToyConfig(**{key: value for key, value in settings.items() if key in fields})
    finished = json.loads((folder / "metrics.json").read_text())
    generator = torch.Generator().manual_seed(config.seed + 2)
    noise = None
    results = {}
    for name in finished:
        if name == HAND_CRAFTED:
            worlds, draws = HandCraftedToy(), None
        else:
            worlds = ToyWorlds(seed=config.seed)
            worlds.load_state_dict(torch.load(folder / name / "model.pt"))
            if noise is None:
                noise = torch.randn(
                    config.evaluation_draws, worlds.encoder_bias.shape[0], generator=generator
                )
            draws = noise
        results[name] = {
            label: model_bounds(worlds, data, config.num_examples, draws)
            for label, data in (("train", config.training_data()), ("exact", toy_data()))
        }
    return results


# The equilibrium surface --------------------------------------------------------------------------


@dataclass(frozen=True)
class LawsConfig:
    r"""Where and how the toy's surface is measured.

    :ivar at: the point :math:`(\delta, \gamma, \sigma)` (:math:`\rho = 1`) of the envelope,
        Hessian and Maxwell checks.
    :ivar step: the central differences' relative step: each multiplier :math:`m` moves by
        :math:`\pm h m` and :math:`\pm h m / 2`.
    :ivar path_end: the first law is integrated along the straight path from ``at`` to here.
    :ivar num_intervals: equilibria along the path, minus one (even).
    :ivar parameter_draws: :math:`P`, the fixed draws of :math:`\theta` (common noise).
    :ivar warmup_steps: Adam steps before the first L-BFGS solve (from the initialization).
    :ivar max_iterations: L-BFGS iterations per solve.
    :ivar tolerance: L-BFGS stops when the largest gradient entry is below this.
    """

    delta: float = 1.0
    gamma: float = 1.0
    sigma: float = 0.1
    step: float = 0.05
    path_delta: float = 1.5
    path_gamma: float = 0.5
    path_sigma: float = 0.2
    num_intervals: int = 8
    num_examples: int = 50
    data_seed: int = 0
    seed: int = 0
    parameter_draws: int = 32
    warmup_steps: int = 3000
    learning_rate: float = 1e-2
    max_iterations: int = 2000
    tolerance: float = 1e-8

    def __post_init__(self) -> None:
        for name in ("step", "learning_rate", "tolerance"):
            check_positive(name, getattr(self, name))
        for name in ("num_examples", "parameter_draws", "warmup_steps", "max_iterations"):
            check_positive_integer(name, getattr(self, name))
        self.at.checked(), self.path_end.checked()
        if self.step >= 1:
            raise ValueError(f"the relative step must be < 1, got {self.step}")
        for name in ("delta", "gamma", "sigma"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"{name} must be > 0 for the relative central differences, got "
                    f"{getattr(self, name)}"
                )
        if self.num_intervals < 2 or self.num_intervals % 2:
            raise ValueError(f"num_intervals must be even and >= 2, got {self.num_intervals}")

    def solver_settings(self) -> dict[str, Any]:
        """The settings a solved equilibrium depends on (the cache is valid across the rest)."""
        names = ("num_examples", "data_seed", "seed", "parameter_draws", "warmup_steps")
        names += ("learning_rate", "max_iterations", "tolerance")
        return {name: getattr(self, name) for name in names}

    @property
    def at(self) -> Multipliers:
        return Multipliers(1.0, self.delta, self.gamma, self.sigma)

    @property
    def path_end(self) -> Multipliers:
        return Multipliers(1.0, self.path_delta, self.path_gamma, self.path_sigma)


class ToyEquilibrium:
    r"""Solve :math:`\min J` of the toy (:math:`\rho = 1`) at given multipliers; warm starts.

    The first solve trains :class:`~thermossl.models.therml.ToyWorlds` (float64) from its
    initialization with Adam, then L-BFGS (strong Wolfe line search) to a gradient below
    :attr:`LawsConfig.tolerance`; every later solve starts from the parameters of the nearest
    solved point, so the equilibria follow one branch of the surface. Solved points are kept, and
    written to ``cache`` (``points.json`` and ``states.pt``) when given, so an interrupted
    measurement resumes.

    :param LawsConfig config: data, draws and solver settings.
    :param Path cache: a folder for the solved points, or ``None``.

    Example (few steps, to show the call)::

        >>> solve = ToyEquilibrium(LawsConfig(parameter_draws=2, warmup_steps=5, max_iterations=5))
        >>> point = solve(Multipliers(1.0, 1.0, 1.0, 0.1))
        >>> point.value > 0, point.multipliers == Multipliers(1.0, 1.0, 1.0, 0.1)
        (True, True)
    """

    def __init__(self, config: LawsConfig = LawsConfig(), cache: Path | None = None):
        self.config = config
        self.cache = None if cache is None else Path(cache)
        self.worlds = ToyWorlds(seed=config.seed, dtype=torch.float64)
        self.derivation = TracedBound(self.worlds)
        self.cells = toy_data(config.num_examples, config.data_seed).cells()
        generator = torch.Generator().manual_seed(config.seed + 3)
        self.noise = torch.randn(
            config.parameter_draws,
            self.worlds.encoder_bias.shape[0],
            generator=generator,
            dtype=torch.float64,
        )
        self.points: dict[Multipliers, SurfacePoint] = {}
        self.states: dict[Multipliers, dict[str, torch.Tensor]] = {}
        self.gradient_norms: dict[Multipliers, float] = {}
        if self.cache is not None and (self.cache / "points.json").exists():
            self._load()

    def _functionals(self) -> Functionals:
        bound = self.derivation(*self.cells, self.config.num_examples, self.noise)
        return Functionals.from_bound(bound, self.config.num_examples)

    def _adam(self, multipliers: Multipliers) -> None:
        optimizer = torch.optim.Adam(self.worlds.parameters(), lr=self.config.learning_rate)
        for _ in range(self.config.warmup_steps):
            loss = objective(self._functionals(), multipliers)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def _lbfgs(self, multipliers: Multipliers) -> float:
        optimizer = torch.optim.LBFGS(
            self.worlds.parameters(),
            max_iter=self.config.max_iterations,
            tolerance_grad=self.config.tolerance,
            tolerance_change=1e-14,
            history_size=50,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = objective(self._functionals(), multipliers)
            loss.backward()
            return loss

        optimizer.step(closure)
        closure()
        return max(float(p.grad.abs().max()) for p in self.worlds.parameters())

    def __call__(self, multipliers: Multipliers) -> SurfacePoint:
        multipliers = multipliers.checked()
        if multipliers in self.points:
            return self.points[multipliers]
        if self.states:
            nearest = min(
                self.states,
                key=lambda m: sum((a - b) ** 2 for a, b in zip(m, multipliers, strict=True)),
            )
            self.worlds.load_state_dict(self.states[nearest])
        else:
            self._adam(multipliers)
        self.gradient_norms[multipliers] = self._lbfgs(multipliers)
        with torch.no_grad():
            values = self._functionals()
            value = float(objective(values, multipliers).detach())
        floats = values.as_floats()
        point = SurfacePoint(multipliers, value, floats["R"], floats["D"], floats["C"], floats["S"])
        self.points[multipliers] = point
        self.states[multipliers] = copy.deepcopy(self.worlds.state_dict())
        if self.cache is not None:
            self._save()
        return point

    def solver_error(self, multipliers: Multipliers) -> dict[str, float]:
        """How far one more L-BFGS round from a solved point moves its functionals.

        The solution is restarted (fresh curvature history) on a copy; the cache is untouched.
        The changes estimate the solver's error in the point's ``D, C, S``, which the finite
        differences' step comparison does not see at the centre.
        """
        multipliers = multipliers.checked()
        point = self(multipliers)
        saved = copy.deepcopy(self.worlds.state_dict())
        self.worlds.load_state_dict(self.states[multipliers])
        try:
            self._lbfgs(multipliers)
            with torch.no_grad():
                values = self._functionals().as_floats()
        finally:
            self.worlds.load_state_dict(saved)
        return {
            symbol: values[symbol] - getattr(point, name)
            for symbol, name in (("D", "distortion"), ("C", "classification"), ("S", "entropy"))
        }

    def _save(self) -> None:
        self.cache.mkdir(parents=True, exist_ok=True)
        rows = [
            {**point._asdict(), "multipliers": list(m), "gradient": self.gradient_norms.get(m)}
            for m, point in self.points.items()
        ]
        settings = self.config.solver_settings()
        write_json(self.cache / "points.json", {"config": settings, "points": rows})
        torch.save({tuple(m): state for m, state in self.states.items()}, self.cache / "states.pt")

    def _load(self) -> None:
        saved = json.loads((self.cache / "points.json").read_text())
        saved_settings = {key: saved["config"].get(key) for key in self.config.solver_settings()}
        if saved_settings != json.loads(json.dumps(self.config.solver_settings())):
            raise ValueError(
                f"{self.cache} holds equilibria of other settings; choose another folder or remove it"
            )
        states = torch.load(self.cache / "states.pt")
        for row in saved["points"]:
            saved_multipliers = row.pop("multipliers")
            m = Multipliers(*saved_multipliers)
            self.gradient_norms[m] = row.pop("gradient")
            self.points[m] = SurfacePoint(m, *(row[f] for f in SurfacePoint._fields[1:]))
            self.states[m] = states[tuple(saved_multipliers)]


def run_toy_laws(
    out: Path,
    config: LawsConfig = LawsConfig(),
    frontier: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure the laws on the toy; write ``OUT/laws.json`` and ``OUT/laws.md``; return the report.

    :param Path frontier: a ``thermossl frontier`` run folder whose models get eq. 11–12 checked;
        ``None`` skips that part.
    """
    out = Path(out)
    report: dict[str, Any] = {"config": asdict(config), **environment()}
    if frontier is not None:
        report["bounds"] = frontier_bounds(frontier)
    solve = ToyEquilibrium(config, cache=out / "equilibria")
    with tqdm(total=2, disable=not progress, desc="surface") as bar:
        derivatives = surface_derivatives(solve, config.at, config.step, relative=True)
        bar.update(1)
        law = first_law(solve, config.at, config.path_end, config.num_intervals)
        bar.update(1)
    solver_error = solve.solver_error(config.at)
    asymmetry, asymmetry_error = derivatives.asymmetry()
    report["surface"] = {
        "at": derivatives.at._asdict() | {"multipliers": list(config.at)},
        "largest_gradient": max(solve.gradient_norms.values()),
        "envelope": [
            {
                "variable": check.variable,
                "derivative": check.derivative.value,
                "error": check.derivative.error,
                "functional": check.functional,
                "residual": check.residual,
                "solver_error": solver_error[symbol],
            }
            for check, symbol in zip(derivatives.envelope, "DCS", strict=True)
        ],
        "hessian": derivatives.hessian.tolist(),
        "hessian_error": derivatives.hessian_error.tolist(),
        "asymmetry": asymmetry.tolist(),
        "asymmetry_error": asymmetry_error.tolist(),
        "largest_eigenvalue": derivatives.eigenvalues()._asdict(),
        "maxwell": {
            name: {"left": left._asdict(), "right": right._asdict()}
            for name, (left, right) in maxwell_relations(derivatives).items()
        },
        "first_law": {
            "rate_change": law.rate_change,
            "work": law.work.value,
            "error": law.work.error,
            "residual": law.residual,
            "path": [
                point._asdict() | {"multipliers": list(point.multipliers)} for point in law.points
            ],
        },
    }
    write_json(out / "laws.json", report)
    (out / "laws.md").write_text(markdown_laws(report) + "\n")
    return report


def markdown_laws(report: dict[str, Any]) -> str:
    """The report as Markdown tables: inequalities per model, then the surface's laws."""
    lines = []
    if "bounds" in report:
        lines += [
            "| model | set | R + D | H(X) + I(Z;Θ|X) | R + C + D + S/N | H(X,Y) |",
            "|---|---|---|---|---|---|",
        ]
        for name, splits in report["bounds"].items():
            title = "Hand-crafted" if name == HAND_CRAFTED else TOY_PRESETS[name].title
            for split, b in splits.items():
                lines.append(
                    f"| {title} | {split} | {b['R+D']:.4f} | {b['H(X)+I(Z;Theta|X)']:.4f} | "
                    f"{b['R+C+D+S/N']:.4f} | {b['H(X,Y)']:.4f} |"
                )
        lines.append("")
    surface = report["surface"]
    symbols = {"delta": ("δ", "D"), "gamma": ("γ", "C"), "sigma": ("σ", "S")}
    lines += [
        "| envelope | ∂J*/∂m (± FD error) | functional (solver error) | residual |",
        "|---|---|---|---|",
    ]
    for row in surface["envelope"]:
        m, f = symbols[row["variable"]]
        lines.append(
            f"| ∂J*/∂{m} = {f} | {row['derivative']:.5f} ± {row['error']:.1e} | "
            f"{row['functional']:.5f} ({row['solver_error']:+.1e}) | {row['residual']:+.1e} |"
        )
    lines += ["", "| Maxwell relation | left (± error) | right (± error) |", "|---|---|---|"]
    for name, sides in surface["maxwell"].items():
        left, right = sides["left"], sides["right"]
        lines.append(
            f"| {name} | {left['value']:+.5f} ± {left['error']:.1e} | "
            f"{right['value']:+.5f} ± {right['error']:.1e} |"
        )
    eigen = surface["largest_eigenvalue"]
    law = surface["first_law"]
    lines += [
        "",
        f"Largest eigenvalue of the symmetrized Hessian: {eigen['value']:+.5f} ± {eigen['error']:.1e}.",
        f"First law along the path: ΔR = {law['rate_change']:+.5f}, "
        f"−∫(γ dC + δ dD + σ dS) = {law['work']:+.5f} ± {law['error']:.1e}, "
        f"residual {law['residual']:+.1e}.",
    ]
    return "\n".join(lines)
