r"""Derive once, replay many: a program's bound recorded as a tensor program.

:func:`~thermossl.objectives.derive_bound` re-runs the whole derivation at every call: the Pyro
effect handlers, the traces, the enumeration bookkeeping, the distribution objects. For a fixed
input signature (shapes, dtypes, devices) none of that Python work changes from one training step
to the next; only tensor values do. :class:`TracedBound` therefore runs the derivation **once** per
signature under :func:`torch.fx.experimental.proxy_tensor.make_fx`, which records every tensor
operation the derivation performs (the networks, the log-densities, the enumeration sums, the
analytic KLs, the stop-gradients), and afterwards replays that recorded graph. The replay computes
exactly the derived bound: the same operations in the same order, without the interpreter work
around them.

Requirements, checked while tracing: the program's control flow must not depend on tensor values
(a data-dependent branch stops the trace with a clear error rather than being frozen into the
graph), and its parameters must be ``nn.Parameter`` s of the module (Pyro's global parameter store
is bypassed). Value checks such as "the inputs are finite" run in Python before each replay.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pyro.poutine.messenger import Messenger
from thermossl.objectives.bound import Bound, DerivedELBO
from torch import Tensor, nn
from torch.func import functional_call

from thermossl._tracing import record
from thermossl._validation import check_finite

__all__ = ["ParameterPassthrough", "TracedBound"]


class TracedBound:
    r"""A program's derived bound, traced once per input signature and replayed afterwards.

    :param torch.nn.Module program: owns the parameters and buffers; its ``model`` and ``guide``
        methods are the Pyro programs unless given explicitly. If it has a
        ``check_inputs(*args)`` method, that runs before every replay; otherwise every tensor
        argument is checked to be finite.
    :param callable model: the model (default ``program.model``).
    :param callable guide: the guide (default ``program.guide``).
    :param DerivedELBO elbo: derivation settings (default: one particle, the program's
        ``max_plate_nesting`` when it declares one).
    :param str backend: optionally hand each recorded graph to :func:`torch.compile` with this
        backend (e.g. ``"inductor"``), which fuses kernels at a one-off compilation cost.

    .. warning:: A program that draws Monte Carlo samples keeps doing so at every replay (the
        random operations are part of the graph), but its *structure* is frozen: a program whose
        sites or plates change with the data needs :func:`~thermossl.objectives.derive_bound`.

    Example::

        >>> from thermossl.models import ContrastiveSSL
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> program = ContrastiveSSL(nn.Linear(4, 3), temperature=0.5)
        >>> bound = TracedBound(program)
        >>> x1, x2 = torch.randn(8, 4), torch.randn(8, 4)
        >>> torch.allclose(bound(x1, x2).total, program.bound(x1, x2).total)
        True
        >>> bound.num_traces  # a second call with the same shapes replays
        1
    """

    def __init__(
        self,
        program: nn.Module,
        model: Callable | None = None,
        guide: Callable | None = None,
        elbo: DerivedELBO | None = None,
        backend: str | None = None,
    ):
        if not isinstance(program, nn.Module):
            raise TypeError(f"program must be a torch.nn.Module, got {type(program).__name__}")
        model = model if model is not None else getattr(program, "model", None)
        guide = guide if guide is not None else getattr(program, "guide", None)
        if not callable(model) or not callable(guide):
            raise ValueError(
                "program must define model and guide methods, or pass model= and guide="
            )
        if elbo is None:
            elbo = DerivedELBO(max_plate_nesting=getattr(program, "max_plate_nesting", math.inf))
        self._derivation = _Derivation(program, model, guide, elbo)
        self.backend = backend
        self._replays: dict[tuple, _Replay] = {}

    @property
    def num_traces(self) -> int:
        """How many input signatures have been traced so far."""
        return len(self._replays)

    def __call__(self, *args) -> Bound:
        """The derived :class:`~thermossl.objectives.Bound` on these arguments."""
        self._check_inputs(args)
        parameters = dict(self._derivation.named_parameters())
        buffers = dict(self._derivation.named_buffers())
        key = _signature(args, parameters, buffers)
        replay = self._replays.get(key)
        if replay is None:
            replay = self._replays[key] = self._trace(parameters, buffers, args)
        outputs = replay.graph(parameters, buffers, *args)
        return Bound(total=outputs[0], terms=dict(zip(replay.term_names, outputs[1:], strict=True)))

    def _check_inputs(self, args: tuple) -> None:
        check_inputs = getattr(self._derivation.program, "check_inputs", None)
        if callable(check_inputs):
            check_inputs(*args)
            return
        for position, value in enumerate(args):
            if isinstance(value, Tensor) and value.is_floating_point():
                check_finite(f"argument {position}", value)

    def _trace(self, parameters: dict, buffers: dict, args: tuple) -> _Replay:
        term_names: list[str] = []

        def derived(parameters, buffers, *args):
            bound = functional_call(self._derivation, (parameters, buffers), args)
            term_names[:] = list(bound.terms)
            return (bound.total, *bound.terms.values())

        with ParameterPassthrough():
            graph = record(
                derived,
                parameters,
                buffers,
                *args,
                pre_dispatch=True,
                backend=self.backend,
                hint="its derivation cannot be recorded once and replayed; use "
                "thermossl.objectives.derive_bound for it",
            )
        return _Replay(graph=graph, term_names=term_names)


@dataclass(frozen=True)
class _Replay:
    graph: Callable
    term_names: list[str]


class _Derivation(nn.Module):
    """Holds the program as a submodule so :func:`torch.func.functional_call` can swap its state."""

    def __init__(self, program: nn.Module, model: Callable, guide: Callable, elbo: DerivedELBO):
        super().__init__()
        self.program = program
        self._model, self._guide, self._elbo = model, guide, elbo

    def forward(self, *args) -> Bound:
        return self._elbo.bound(self._model, self._guide, *args)


class ParameterPassthrough(Messenger):
    """Answer ``pyro.param(name, value)`` with ``value`` itself, leaving the param store alone.

    While tracing, the parameters are stand-ins for the module's; registering them in Pyro's
    global store (as :class:`~pyro.nn.PyroModule` does for submodules) would leak the stand-ins.
    Inside a :mod:`torch.func` transform (a sampler's ``vmap`` of ``grad``) the store cannot
    register a parameter at all, so programs run there under this handler too.
    """

    def _pyro_param(self, msg) -> None:
        if len(msg["args"]) > 1 and msg["args"][1] is not None:
            msg["value"] = msg["args"][1]
            msg["done"] = True


def _signature(args: tuple, parameters: dict, buffers: dict) -> tuple:
    def describe(value):
        if isinstance(value, Tensor):
            return ("tensor", tuple(value.shape), value.dtype, value.device, value.requires_grad)
        return ("value", value)

    return (
        tuple(describe(value) for value in args),
        tuple((name, describe(value)) for name, value in parameters.items()),
        tuple((name, describe(value)) for name, value in buffers.items()),
    )
