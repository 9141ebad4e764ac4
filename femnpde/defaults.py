"""Defaults shared by the numerical constructors and the configuration schema.

The one home of a default that a constructor (``ShallowNetwork``, ``MLP``,
``ParabolicProblem``, ``ThetaSolver``) and a configuration key
(:data:`femnpde.app.schema.DEFAULTS`) both have: the schema builds its table
from these names and the constructors use them as their keyword defaults,
so the two cannot drift apart.  Every other default of a run lives in the
schema only.  This module imports nothing (numerics <- app: both may read it).
"""

__all__ = [
    "NETWORK_NEURONS",
    "NETWORK_BETA",
    "NETWORK_ACTIVATION",
    "NETWORK_SEED",
    "NETWORK_OUTPUTS",
    "MLP_INIT",
    "MLP_OUTPUT_SCALE",
    "PDE_DEGREE",
    "PDE_SOURCE",
    "TIME_THETA",
    "TIME_NONLINEAR",
    "TIME_NONLINEAR_CHOICES",
    "NEWTON_RTOL",
    "NEWTON_ATOL",
    "NEWTON_MAX_IT",
    "NONLINEAR_METHOD",
    "NONLINEAR_METHOD_CHOICES",
    "FORWARD_GUESS",
    "FORWARD_GUESS_CHOICES",
]

#: ``network.neurons``: the width of the shallow network.
NETWORK_NEURONS: int = 100
#: ``network.beta``: the mean-field scaling exponent of the output layer, ``N^-beta``.
NETWORK_BETA: float = 2 / 3
#: ``network.activation``.
NETWORK_ACTIVATION: str = "tanh"
#: ``network.seed``: the seed of the initial parameters.
NETWORK_SEED: int = 42
#: ``network.outputs``: the number of network outputs (source coefficients).
NETWORK_OUTPUTS: int = 1
#: ``network.init``: the MLP's initialisation.
MLP_INIT: str = "glorot"
#: ``network.output_scale``: the MLP's output scaling.
MLP_OUTPUT_SCALE: str = "none"
#: ``pde.degree``: the Lagrange degree of the solution space.
PDE_DEGREE: int = 1
#: ``pde.source``: the kind of source space.
PDE_SOURCE: str = "lagrange"
#: ``time.theta``: the theta of the time scheme (1 = implicit Euler).
TIME_THETA: float = 1.0
#: ``time.nonlinear``: how the theta scheme treats the nonlinear remainder of the residual.
TIME_NONLINEAR: str = "implicit"
#: Its choices: ``"implicit"`` (the whole residual at u^n: a nonlinear solve per step) or
#: ``"explicit"`` (IMEX: the remainder at u^{n-1}, one linear solve per step with a constant matrix).
TIME_NONLINEAR_CHOICES: tuple[str, ...] = ("implicit", "explicit")
#: ``solver.newton_rtol``: the relative tolerance of the nonlinear solve.
NEWTON_RTOL: float = 1e-11
#: ``solver.newton_atol``: the absolute tolerance of the nonlinear solve.
NEWTON_ATOL: float = 1e-13
#: ``solver.newton_max_it``: the iteration limit of the nonlinear solve.
NEWTON_MAX_IT: int = 25
#: ``solver.nonlinear_method``: how the linear systems of a nonlinear step are solved.
NONLINEAR_METHOD: str = "auto"
#: Its choices: ``"chord"`` (a lagged Newton matrix, factorised and refreshed when the residual falls
#: slowly), ``"krylov"`` (Krylov solves preconditioned by the constant linear part, factorised once),
#: ``"auto"`` (krylov for large problems: :func:`femnpde.fem.newton.default_nonlinear_method`).
NONLINEAR_METHOD_CHOICES: tuple[str, ...] = ("auto", "chord", "krylov")
#: ``solver.forward_guess``: the initial guess of the forward's Krylov solves of a constant symmetric step.
FORWARD_GUESS: str = "previous"
#: Its choices: ``"previous"`` (``u^{n-1}``: any state storage reproduces the states bitwise),
#: ``"projection"`` (the projection onto the sweep's earlier corrections: fewer iterations; all levels in memory).
FORWARD_GUESS_CHOICES: tuple[str, ...] = ("previous", "projection")
