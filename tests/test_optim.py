"""Tests for femnpde.optim.optimizers (numpy/scipy only, no MPI)."""

from __future__ import annotations

import io
import math
import pickle

import numpy as np
import pytest
from scipy.optimize import rosen, rosen_der

from femnpde.optim import (
    Adam,
    CosineAnnealingLR,
    GradientDescent,
    LBFGSResult,
    ReduceLROnPlateau,
    StepLR,
    make_optimizer,
    make_schedule,
    minimize_lbfgs,
)

#: numpy/scipy only: nothing here depends on the number of MPI ranks.
pytestmark = pytest.mark.serial

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

_A = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]])
_B = np.array([1.0, -2.0, 0.5])
_X_STAR = np.linalg.solve(_A, _B)


def _quadratic(x: np.ndarray) -> tuple[float, np.ndarray]:
    """f(x) = ½ xᵀAx − bᵀx (SPD A), minimum at A⁻¹b."""
    ax = _A @ x
    return 0.5 * float(x @ ax) - float(_B @ x), ax - _B


class _LR:
    """Minimal stand-in optimizer: schedules only need a settable ``lr``."""

    def __init__(self, lr: float) -> None:
        self.lr = lr


# ---------------------------------------------------------------------------
# gradient descent
# ---------------------------------------------------------------------------


def test_gd_step_formula_exact() -> None:
    # values chosen so that every operation is exact in binary floating point
    theta = np.array([1.0, -2.0, 0.0])
    GradientDescent(lr=0.5).step(theta, np.array([0.5, 0.25, -1.0]))
    np.testing.assert_array_equal(theta, [0.75, -2.125, 0.5])

    theta = np.array([1.0, -2.0])
    # θ − lr·(g + wd·θ) = [1 − 0.5·(0.5 + 0.25), −2 − 0.5·(0.25 − 0.5)]
    GradientDescent(lr=0.5, weight_decay=0.25).step(theta, np.array([0.5, 0.25]))
    np.testing.assert_array_equal(theta, [0.625, -1.875])


def test_gd_updates_in_place_and_lr_is_settable() -> None:
    theta = np.array([1.0, 1.0])
    alias = theta
    opt = GradientDescent(lr=1.0)
    opt.lr = 0.25
    opt.step(theta, np.array([4.0, -4.0]))
    assert alias is theta
    np.testing.assert_array_equal(alias, [0.0, 2.0])


def test_gd_minimises_convex_quadratic() -> None:
    theta = np.zeros(3)
    opt = GradientDescent(lr=0.2)  # < 2 / λ_max(A)
    for _ in range(300):
        opt.step(theta, _quadratic(theta)[1])
    np.testing.assert_allclose(theta, _X_STAR, atol=1e-10)


# ---------------------------------------------------------------------------
# Adam
# ---------------------------------------------------------------------------


def _adam_reference(theta0, grads_fn, n_steps, lr, beta1, beta2, eps, wd):
    """Adam written out element by element in scalar Python floats.

    Textbook form (Kingma & Ba with torch's placement of eps and L2 decay)::

        g  = ∇f(θ) + wd·θ
        m  = β1·m + (1 − β1)·g
        v  = β2·v + (1 − β2)·g²
        m̂ = m / (1 − β1^t),  v̂ = v / (1 − β2^t)
        θ  = θ − lr·m̂ / (√v̂ + eps)
    """
    theta = [float(x) for x in theta0]
    m = [0.0] * len(theta)
    v = [0.0] * len(theta)
    for t in range(1, n_steps + 1):
        grad = grads_fn(np.array(theta))
        for i in range(len(theta)):
            g = float(grad[i]) + wd * theta[i]
            m[i] = beta1 * m[i] + (1.0 - beta1) * g
            v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
            m_hat = m[i] / (1.0 - beta1**t)
            v_hat = v[i] / (1.0 - beta2**t)
            theta[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
    return np.array(theta)


@pytest.mark.parametrize(
    ("lr", "betas", "eps", "wd"),
    [
        (0.1, (0.9, 0.999), 1e-8, 0.0),
        (0.05, (0.8, 0.99), 0.5, 0.1),  # large eps and decay make placement errors visible
        (0.3, (0.0, 0.5), 1e-3, 0.0),  # beta1 = 0: the other lerp branch
    ],
)
def test_adam_matches_hand_computed_reference(lr, betas, eps, wd) -> None:
    theta0 = np.array([0.5, -1.5, 2.0, 0.0])

    def grads(theta: np.ndarray) -> np.ndarray:
        # deliberately nonlinear so the three gradients differ
        return np.array([theta[0] ** 3, math.sin(theta[1]), -2.0 * theta[2], 0.3])

    expected = _adam_reference(theta0, grads, 3, lr, betas[0], betas[1], eps, wd)
    theta = theta0.copy()
    opt = Adam(lr=lr, betas=betas, eps=eps, weight_decay=wd)
    for _ in range(3):
        opt.step(theta, grads(theta))
    assert opt.t == 3
    np.testing.assert_allclose(theta, expected, rtol=1e-14, atol=1e-15)


def test_adam_first_step_is_lr_times_sign() -> None:
    # at t = 1, m̂ = g and √v̂ = |g|, so the step is lr·sign(g) (eps negligible)
    theta = np.array([1.0, 1.0, 1.0])
    Adam(lr=0.01).step(theta, np.array([1e3, -2.0, 1e-2]))
    np.testing.assert_allclose(theta, [0.99, 1.01, 0.99], rtol=0, atol=1e-8)


def test_adam_weight_decay_is_l2_not_decoupled() -> None:
    # zero loss gradient: L2 decay gives g = wd·θ, so the first step is lr·sign(θ);
    # decoupled (AdamW) decay would give a zero Adam step plus lr·wd·θ.
    theta = np.array([2.0, -3.0])
    Adam(lr=0.1, weight_decay=0.01).step(theta, np.zeros(2))
    np.testing.assert_allclose(theta, [1.9, -2.9], rtol=0, atol=1e-6)


def test_adam_minimises_convex_quadratic() -> None:
    theta = np.zeros(3)
    opt = Adam(lr=0.05)
    sched = CosineAnnealingLR(opt, T_max=2000)
    for _ in range(2000):
        opt.step(theta, _quadratic(theta)[1])
        sched.step()
    np.testing.assert_allclose(theta, _X_STAR, atol=1e-5)


def test_adam_rejects_shape_change_after_first_step() -> None:
    opt = Adam()
    opt.step(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="params"):
        opt.step(np.zeros(4), np.ones(4))


# ---------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------


def test_plateau_reduces_after_patience_bad_epochs() -> None:
    opt = _LR(1.0)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=2)
    sched.step(1.0)  # first value is an improvement over +inf
    sched.step(1.0)  # bad 1
    sched.step(1.0)  # bad 2 (== patience: still tolerated)
    assert opt.lr == 1.0
    sched.step(1.0)  # bad 3 > patience → reduce
    assert opt.lr == 0.5
    assert sched.num_bad_epochs == 0
    sched.step(0.5)  # improvement resets the counter
    sched.step(0.5)
    sched.step(0.5)
    assert opt.lr == 0.5
    sched.step(0.5)
    assert opt.lr == 0.25


def test_plateau_improving_metric_never_reduces() -> None:
    opt = _LR(1.0)
    sched = ReduceLROnPlateau(opt, patience=1)
    for k in range(50):
        sched.step(1.0 / (k + 1))
    assert opt.lr == 1.0


def test_plateau_min_lr_and_eps() -> None:
    opt = _LR(1.0)
    sched = ReduceLROnPlateau(opt, factor=0.1, patience=1, min_lr=0.05)
    for _ in range(20):
        sched.step(3.0)
    assert opt.lr == 0.05

    # a reduction smaller than eps is skipped
    opt = _LR(1e-8)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=1, eps=1e-8)
    for _ in range(10):
        sched.step(3.0)
    assert opt.lr == 1e-8


def test_plateau_relative_threshold() -> None:
    # rel mode: better means metric < best·(1 − threshold) = 9.9 for best = 10
    opt = _LR(1.0)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=1, threshold=1e-2)
    sched.step(10.0)
    sched.step(9.95)  # 0.5 % better: below the 1 % threshold → bad (abs mode would accept)
    sched.step(9.93)  # still not < 9.9 → bad, 2 > patience → reduce
    assert opt.lr == 0.5
    assert sched.best == 10.0

    opt = _LR(1.0)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=1, threshold=1e-2)
    sched.step(10.0)
    sched.step(9.85)  # 1.5 % better → improvement
    sched.step(9.7)  # < 9.85·0.99 → improvement
    assert opt.lr == 1.0
    assert sched.best == 9.7


def test_plateau_absolute_threshold() -> None:
    opt = _LR(1.0)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=1, threshold=0.1, threshold_mode="abs")
    sched.step(10.0)
    sched.step(9.95)  # not < 10 − 0.1 → bad
    sched.step(9.85)  # < 9.9 → improvement, resets
    sched.step(9.8)  # bad
    assert opt.lr == 1.0
    sched.step(9.8)  # bad 2 → reduce
    assert opt.lr == 0.5


def test_plateau_cooldown() -> None:
    opt = _LR(1.0)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=3)
    lrs = []
    for _ in range(12):
        sched.step(1.0)
        lrs.append(opt.lr)
    # epoch 1 sets best; epochs 2,3 bad → reduce at 3; epochs 4–6 cooldown
    # (bad epochs ignored); epochs 7,8 bad → reduce at 8; cooldown 9–11; 12 bad.
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25]

    # without cooldown the second reduction comes at epoch 5
    opt = _LR(1.0)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=1)
    lrs = []
    for _ in range(5):
        sched.step(1.0)
        lrs.append(opt.lr)
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_step_lr_values() -> None:
    opt = GradientDescent(lr=1.0)
    sched = StepLR(opt, step_size=3, gamma=0.5)
    lrs = []
    for _ in range(10):
        sched.step()
        lrs.append(opt.lr)
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125]


def test_cosine_values_and_clamp() -> None:
    opt = Adam(lr=2.0)
    sched = CosineAnnealingLR(opt, T_max=4, eta_min=1.0)
    lrs = []
    for _ in range(6):
        sched.step(123.0)  # metric is accepted and ignored
        lrs.append(opt.lr)
    c = math.cos(math.pi / 4)
    expected = [1.0 + (1 + c) / 2, 1.5, 1.0 + (1 - c) / 2, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(lrs, expected, rtol=1e-15)
    assert lrs[3] == lrs[4] == lrs[5] == 1.0


def test_cosine_can_anneal_to_zero() -> None:
    opt = GradientDescent(lr=0.1)
    sched = CosineAnnealingLR(opt, T_max=2)
    sched.step()
    sched.step()
    assert opt.lr == 0.0
    theta = np.array([1.0])
    opt.step(theta, np.array([5.0]))
    assert theta[0] == 1.0


def test_make_schedule() -> None:
    opt = GradientDescent(lr=1.0)
    assert make_schedule(opt, None) is None
    assert make_schedule(opt, "none") is None
    assert isinstance(make_schedule(opt, "plateau", patience=3), ReduceLROnPlateau)
    assert isinstance(make_schedule(opt, "step", step_size=2, gamma=0.5), StepLR)
    sched = make_schedule(opt, "cosine", T_max=10)
    assert isinstance(sched, CosineAnnealingLR) and sched.T_max == 10


def test_make_optimizer() -> None:
    opt = make_optimizer("adam", 0.01, betas=(0.5, 0.6), eps=1e-6)
    assert isinstance(opt, Adam) and opt.lr == 0.01 and opt.betas == (0.5, 0.6)
    gd = make_optimizer("gd", 0.1, weight_decay=0.01)
    assert isinstance(gd, GradientDescent) and gd.weight_decay == 0.01


# ---------------------------------------------------------------------------
# checkpoint round trips
# ---------------------------------------------------------------------------

_OTHER_SCHEDULE_OPTIONS = {"plateau": {}, "step": {"step_size": 1}, "cosine": {"T_max": 2}}
_SCHEDULE_OPTIONS = {
    "plateau": {"factor": 0.7, "patience": 2, "threshold": 0.02, "cooldown": 1},
    "step": {"step_size": 3, "gamma": 0.7},
    "cosine": {"T_max": 15, "eta_min": 1e-3},
}


def _noisy_grad(theta: np.ndarray, epoch: int) -> tuple[float, np.ndarray]:
    loss, grad = _quadratic(theta)
    return loss, grad + 0.1 * np.sin(np.arange(theta.size) + 1.7 * epoch)


def _train(opt, sched, theta: np.ndarray, epochs: range) -> None:
    for epoch in epochs:
        loss, grad = _noisy_grad(theta, epoch)
        opt.step(theta, grad)
        # positive metric with a sawtooth so that the plateau schedule reduces the
        # learning rate repeatedly, both before and after the checkpoint
        sched.step(loss + 1.5 + 0.1 * (epoch % 4))


def _savez_roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("opt_kind", ["gd", "adam"])
@pytest.mark.parametrize("sched_kind", ["plateau", "step", "cosine"])
@pytest.mark.parametrize("transport", ["dict", "pickle", "savez"])
def test_checkpoint_round_trip_is_bitwise(opt_kind, sched_kind, transport) -> None:
    options = {"weight_decay": 0.01} if opt_kind == "gd" else {"weight_decay": 0.01, "eps": 1e-6}
    opt = make_optimizer(opt_kind, 0.05, **options)
    sched = make_schedule(opt, sched_kind, **_SCHEDULE_OPTIONS[sched_kind])
    theta = np.array([0.3, -0.2, 0.9])
    _train(opt, sched, theta, range(0, 10))

    saved_theta, saved_lr = theta.copy(), opt.lr
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    assert opt_state["kind"] == opt_kind and sched_state["kind"] == sched_kind
    if transport == "pickle":
        opt_state, sched_state = pickle.loads(pickle.dumps((opt_state, sched_state)))
    elif transport == "savez":
        opt_state, sched_state = _savez_roundtrip(opt_state), _savez_roundtrip(sched_state)

    # uninterrupted run (also checks that state_dict() returned copies)
    _train(opt, sched, theta, range(10, 20))

    # resumed run: fresh objects with deliberately different settings
    opt2 = make_optimizer(opt_kind, 0.9)
    sched2 = make_schedule(opt2, sched_kind, **_OTHER_SCHEDULE_OPTIONS[sched_kind])
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    theta2 = saved_theta.copy()
    _train(opt2, sched2, theta2, range(10, 20))

    np.testing.assert_array_equal(theta2, theta)
    assert opt2.lr == opt.lr
    # the test is not vacuous: parameters and learning rate moved after the checkpoint
    assert not np.array_equal(theta, saved_theta)
    assert opt.lr != saved_lr


def test_checkpoint_test_can_fail_without_adam_moments() -> None:
    # sanity check of the round-trip test: dropping Adam's moments changes the result
    opt = Adam(lr=0.05)
    theta = np.array([0.3, -0.2, 0.9])
    sched = StepLR(opt, step_size=100)
    _train(opt, sched, theta, range(0, 10))
    state = opt.state_dict()
    saved = theta.copy()
    _train(opt, sched, theta, range(10, 20))

    state["m"] = np.zeros_like(state["m"])
    opt2 = Adam()
    opt2.load_state_dict(state)
    theta2 = saved.copy()
    _train(opt2, StepLR(opt2, step_size=100), theta2, range(10, 20))
    assert not np.array_equal(theta2, theta)


def test_adam_state_dict_before_first_step() -> None:
    state = _savez_roundtrip(Adam(lr=0.1).state_dict())
    opt = Adam()
    opt.load_state_dict(state)
    ref = Adam(lr=0.1)
    a, b = np.array([1.0, 2.0]), np.array([1.0, 2.0])
    opt.step(a, np.array([0.5, -0.5]))
    ref.step(b, np.array([0.5, -0.5]))
    np.testing.assert_array_equal(a, b)


def test_optimizers_are_deterministic() -> None:
    results = []
    for _ in range(2):
        opt = Adam(lr=0.05, weight_decay=0.01)
        sched = ReduceLROnPlateau(opt, patience=1)
        theta = np.linspace(-1.0, 1.0, 3)
        _train(opt, sched, theta, range(30))
        results.append(theta)
    np.testing.assert_array_equal(results[0], results[1])


# ---------------------------------------------------------------------------
# L-BFGS
# ---------------------------------------------------------------------------

_ROSEN_X0 = np.array([1.3, 0.7, 0.8, 1.9, 1.2])


class _Counted:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.calls += 1
        return rosen(x), rosen_der(x)


@pytest.fixture(scope="module")
def rosen_runs() -> dict:
    """One converged Rosenbrock run with a callback and one without (shared: L-BFGS-B is
    slow per iteration with multi-threaded BLAS on tiny problems)."""
    calls = []

    def callback(iteration, params, loss, grad):
        calls.append((iteration, params, loss, grad))

    fg_cb, fg_plain = _Counted(), _Counted()
    res = minimize_lbfgs(fg_cb, _ROSEN_X0, max_iterations=500, callback=callback, gtol=1e-10)
    plain = minimize_lbfgs(fg_plain, _ROSEN_X0, max_iterations=500, gtol=1e-10)
    return {"res": res, "calls": calls, "fg_cb": fg_cb, "plain": plain, "fg_plain": fg_plain}


def test_lbfgs_minimises_rosenbrock_much_faster_than_gd(rosen_runs) -> None:
    res, fg = rosen_runs["plain"], rosen_runs["fg_plain"]
    assert isinstance(res, LBFGSResult)
    assert res.success, res.message
    np.testing.assert_allclose(res.params, np.ones(5), atol=1e-6)
    assert res.n_iterations < 100
    assert res.n_evaluations == fg.calls
    assert res.n_iterations < res.n_evaluations <= 3 * res.n_iterations + 5

    # gradient descent with 20x the iteration budget is still far from the minimum
    theta = _ROSEN_X0.copy()
    gd = GradientDescent(lr=1e-3)
    for _ in range(20 * res.n_iterations):
        gd.step(theta, rosen_der(theta))
    assert np.max(np.abs(theta - 1.0)) > 1e-3


def test_lbfgs_does_not_modify_x0_and_is_deterministic() -> None:
    x0 = _ROSEN_X0.copy()
    r1 = minimize_lbfgs(_Counted(), x0, max_iterations=8)
    r2 = minimize_lbfgs(_Counted(), x0, max_iterations=8)
    np.testing.assert_array_equal(x0, _ROSEN_X0)
    np.testing.assert_array_equal(r1.params, r2.params)
    assert (r1.n_iterations, r1.n_evaluations) == (r2.n_iterations, r2.n_evaluations)
    assert r1.n_iterations == 8
    assert r1.success  # reaching max_iterations is a normal end of training


def test_lbfgs_callback_once_per_iteration_with_consistent_values(rosen_runs) -> None:
    res, calls, plain = rosen_runs["res"], rosen_runs["calls"], rosen_runs["plain"]
    assert len(calls) == res.n_iterations
    assert [c[0] for c in calls] == list(range(res.n_iterations))
    for _, params, loss, grad in calls:
        assert loss == rosen(params)
        np.testing.assert_array_equal(grad, rosen_der(params))
    np.testing.assert_array_equal(calls[-1][1], res.params)
    # the callback costs no extra evaluations and does not change the run
    assert rosen_runs["fg_cb"].calls == rosen_runs["fg_plain"].calls == res.n_evaluations
    np.testing.assert_array_equal(res.params, plain.params)
    # the loss decreases monotonically along accepted iterates
    losses = [c[2] for c in calls]
    assert all(b <= a for a, b in zip(losses[:-1], losses[1:], strict=True))


def test_lbfgs_early_stop_via_callback() -> None:
    seen = []

    def callback(iteration, params, loss, grad):
        seen.append(params)
        return iteration == 4

    fg = _Counted()
    res = minimize_lbfgs(fg, _ROSEN_X0, max_iterations=500, callback=callback)
    assert res.n_iterations == 5
    assert len(seen) == 5
    np.testing.assert_array_equal(res.params, seen[-1])
    assert res.success and "callback" in res.message
    assert res.n_evaluations == fg.calls


def test_lbfgs_callback_may_mutate_its_arguments() -> None:
    def callback(iteration, params, loss, grad):
        params[:] = 0.0
        grad[:] = 0.0

    ref = minimize_lbfgs(_Counted(), _ROSEN_X0, max_iterations=6)
    res = minimize_lbfgs(_Counted(), _ROSEN_X0, max_iterations=6, callback=callback)
    np.testing.assert_array_equal(res.params, ref.params)


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------

_opt = GradientDescent(lr=1.0)


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda: GradientDescent(lr=0.0), "lr"),
        (lambda: GradientDescent(lr=-1.0), "lr"),
        (lambda: GradientDescent(lr=float("nan")), "lr"),
        (lambda: GradientDescent(lr=1.0, weight_decay=-0.1), "weight_decay"),
        (lambda: Adam(lr=-1e-3), "lr"),
        (lambda: Adam(betas=(1.0, 0.999)), r"betas\[0\]"),
        (lambda: Adam(betas=(0.9, -0.1)), r"betas\[1\]"),
        (lambda: Adam(betas=(0.9,)), "betas"),
        (lambda: Adam(eps=0.0), "eps"),
        (lambda: Adam(weight_decay=-1.0), "weight_decay"),
        (lambda: setattr(GradientDescent(lr=1.0), "lr", -0.5), "lr"),
        (lambda: ReduceLROnPlateau(_opt, factor=1.0), "factor"),
        (lambda: ReduceLROnPlateau(_opt, factor=0.0), "factor"),
        (lambda: ReduceLROnPlateau(_opt, patience=0), "patience"),
        (lambda: ReduceLROnPlateau(_opt, patience=2.5), "patience"),
        (lambda: ReduceLROnPlateau(_opt, threshold=-1.0), "threshold"),
        (lambda: ReduceLROnPlateau(_opt, threshold_mode="max"), "threshold_mode"),
        (lambda: ReduceLROnPlateau(_opt, cooldown=-1), "cooldown"),
        (lambda: ReduceLROnPlateau(_opt, min_lr=-1.0), "min_lr"),
        (lambda: ReduceLROnPlateau(object()), "optimizer"),
        (lambda: StepLR(_opt, step_size=0), "step_size"),
        (lambda: StepLR(_opt, step_size=2, gamma=0.0), "gamma"),
        (lambda: CosineAnnealingLR(_opt, T_max=0), "T_max"),
        (lambda: CosineAnnealingLR(_opt, T_max=5, eta_min=-1.0), "eta_min"),
        (lambda: GradientDescent(1.0).step(np.zeros(3), np.zeros(4)), "grad"),
        (lambda: Adam().step(np.zeros(3), np.zeros((3, 1))), "grad"),
        (lambda: GradientDescent(1.0).step(np.zeros(3, dtype=np.float32), np.zeros(3)), "params"),
        (lambda: GradientDescent(1.0).step([0.0, 1.0], np.zeros(2)), "params"),
        (lambda: make_optimizer("sgd", 0.1), "sgd"),
        (lambda: make_optimizer("lbfgs", 0.1), "minimize_lbfgs"),
        (lambda: make_optimizer("gd", 0.1, betas=(0.9, 0.9)), "betas"),
        (lambda: make_optimizer("adam", 0.0), "lr"),
        (lambda: make_schedule(_opt, "exponential"), "exponential"),
        (lambda: make_schedule(_opt, "step", step_size=2, patience=3), "patience"),
        (lambda: make_schedule(_opt, None, patience=3), "patience"),
        (lambda: minimize_lbfgs(_Counted(), _ROSEN_X0, max_iterations=0), "max_iterations"),
        (lambda: minimize_lbfgs(_Counted(), _ROSEN_X0, 10, memory=0), "memory"),
        (lambda: minimize_lbfgs(_Counted(), _ROSEN_X0, 10, gtol=-1.0), "gtol"),
        (lambda: minimize_lbfgs(_Counted(), _ROSEN_X0, 10, ftol=-1.0), "ftol"),
        (lambda: minimize_lbfgs(_Counted(), _ROSEN_X0, 10, max_evaluations=0), "max_evaluations"),
        (lambda: minimize_lbfgs(_Counted(), np.ones((2, 2)), 10), "x0"),
        (lambda: minimize_lbfgs(lambda x: (0.0, np.zeros(2)), _ROSEN_X0, 10), "gradient"),
        (lambda: Adam().load_state_dict(GradientDescent(1.0).state_dict()), "kind"),
        (lambda: StepLR(_opt, 2).load_state_dict(CosineAnnealingLR(_opt, 2).state_dict()), "kind"),
        (lambda: Adam().load_state_dict({"kind": "adam"}), "lr"),
    ],
)
def test_value_errors_name_the_argument(factory, name) -> None:
    with pytest.raises(ValueError, match=name):
        factory()


def test_error_messages_list_valid_choices() -> None:
    with pytest.raises(ValueError, match="'adam'.*'gd'"):
        make_optimizer("sgd", 0.1)
    with pytest.raises(ValueError, match="'plateau'.*'step'.*'cosine'"):
        make_schedule(_opt, "exp")
    with pytest.raises(ValueError, match="weight_decay"):
        make_optimizer("gd", 0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"-0\.5"):
        GradientDescent(lr=-0.5)


def _rosen_fg(x):
    return rosen(x), rosen_der(x)


@pytest.mark.parametrize("bounded", [False, True])
@pytest.mark.parametrize("iterations", [5, 30, 200])
def test_lbfgsb_is_scipy_and_resumes_on_its_trajectory(bounded, iterations):
    """LBFGSB's iterates are scipy.optimize.minimize's (L-BFGS-B), and stopped half-way, saved and
    restored into a new LBFGSB, it ends where the uninterrupted run ends (bitwise)."""
    from scipy.optimize import minimize

    from femnpde.optim import LBFGSB

    x0 = np.linspace(-0.45, 0.75, 7)
    bounds = (np.full(7, -0.5), np.full(7, 0.8)) if bounded else None
    ref = minimize(_rosen_fg, x0, jac=True, method="L-BFGS-B", bounds=None if bounds is None else list(zip(*bounds)),
                   options={"maxiter": iterations, "maxcor": 4, "gtol": 0.0, "ftol": 0.0})
    whole = minimize_lbfgs(_rosen_fg, x0, iterations, memory=4, bounds=bounds)
    np.testing.assert_array_equal(whole.params, ref.x)
    assert (whole.n_iterations, whole.n_evaluations) == (ref.nit, ref.nfev)
    first = LBFGSB(4, bounds=bounds)
    a = first.minimize(_rosen_fg, x0, iterations // 2)
    state = pickle.loads(pickle.dumps(first.state_dict()))
    second = LBFGSB(4, bounds=bounds)
    second.load_state_dict(state)
    assert second.resumes_from(a.params)
    b = second.minimize(_rosen_fg, a.params, iterations - iterations // 2)
    np.testing.assert_array_equal(b.params, whole.params)
    assert a.n_iterations + b.n_iterations == whole.n_iterations
    with pytest.raises(ValueError, match="memory 4, this run has memory 5"):
        LBFGSB(5).load_state_dict(state)
