"""Synthetic data are solved without the training solver's state storage."""

import numpy as np
import pytest

from femnpde.app.scenarios import paper_problem
from femnpde.app.synthetic import synthetic_field, target_for
from femnpde.fem.solver import ThetaSolver
from femnpde.model.reduced import FunctionSource


class _Spy:
    """A state storage that records every call made on it."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.keeps_all_levels = inner.keeps_all_levels

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if callable(attr):
            def record(*args, **kwargs):
                self.calls.append(name)
                return attr(*args, **kwargs)
            return record
        return attr


@pytest.mark.parametrize("pde", ["heat", "allen-cahn"])
def test_synthetic_field_leaves_the_training_storage_alone(pde):
    """The data equal a forward solve's states; the solver's storage is not stored into, read or cleared."""
    problem = paper_problem(pde, nx=4, ny=8, n_steps=8)
    solver = ThetaSolver(problem, f"synth_{pde.replace('-', '_')}_")
    target = target_for(problem, "difficult").values()
    other = FunctionSource(problem, lambda t, x: 0.1 + 0.0 * x[0]).values()
    expected = solver.forward(target).to_array()[:, : problem.n_owned].copy()
    kept = solver.forward(other).to_array().copy()  # the states the reduced functional last saw
    solver.states = spy = _Spy(solver.states)
    data = synthetic_field(solver, problem, target)
    assert spy.calls == []
    # Nonlinear steps start from the solver's lagged Newton matrix (of the last solve): equal to round-off.
    np.testing.assert_allclose(data, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_array_equal(spy.inner.to_array(), kept)
    solver.destroy()
