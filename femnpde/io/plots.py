"""PNG figures of a run: history, comparisons, width study (matplotlib on an Agg canvas, imported lazily; rank 0).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from femnpde._mpi import collective_check, comm_rank, on_root
from femnpde.io.files import atomic_write
from femnpde.io.gather import gather_owned, gather_triangles
from femnpde.io.history import History

__all__ = ['plot_comparison', 'plot_history', 'plot_width_study']


def _new_figure(figsize: tuple[float, float], layout: str | None = None) -> Any:
    """A matplotlib Figure on an Agg canvas (no pyplot, no global backend state)."""
    # An explicit Agg canvas: no display needed, and unlike matplotlib.use("Agg")
    # it does not switch the backend of a user's pyplot session.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, out_png: pathlib.Path) -> None:
    out_png.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_png, lambda f: fig.savefig(f, format="png", dpi=120))


def plot_width_study(
    widths: Sequence[int],
    curves: Mapping[str, Sequence[float]],
    out_png: str | os.PathLike,
    comm: Any,
    title: str = "",
    ylabel: str = "relative RMSE",
) -> None:
    """Log-log plot of one or more curves against the network width N (rank 0 writes).

    Args:
        widths: The neuron counts.
        curves: Label -> values per width (e.g. final and best relative RMSE).
        out_png: The PNG file.
        comm: Communicator (only rank 0 draws).
        title: Figure title.
        ylabel: Label of the y axis.
    """
    if comm_rank(comm) != 0:
        return
    fig = _new_figure((5.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for (label, values), style in zip(curves.items(), ("o-", "s--", "^:", "d-.")):
        ax.loglog(list(widths), list(values), style, label=label)
    ax.set_xlabel("neurons N")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _save_png(fig, pathlib.Path(out_png))


def plot_history(
    history_csv: str | os.PathLike,
    out_png: str | os.PathLike,
    comm: Any,
    title: str = "",
) -> None:
    """Plot the loss and the relative RMSE against the epoch (rank 0 writes; collective).

    Two panels, both with a logarithmic y axis (non-positive values are left
    out).

    Args:
        history_csv: A file written by :class:`History`.
        out_png: The PNG file.
        comm: The communicator.
        title: Figure title.
    """
    out_png = pathlib.Path(out_png)

    def plot() -> None:
        h = History.read(history_csv)
        fig = _new_figure((10.0, 4.0), layout="constrained")
        axes = fig.subplots(1, 2)
        epoch = np.asarray(h.get("epoch", np.zeros(0)), dtype=np.float64)
        for ax, key, label in (
            (axes[0], "loss", "loss"),
            (axes[1], "relative_rmse", "relative RMSE"),
        ):
            y = np.asarray(h.get(key, np.full(epoch.shape, np.nan)), dtype=np.float64)
            ok = np.isfinite(y) & np.isfinite(epoch) & (y > 0)
            if np.any(ok):
                ax.semilogy(
                    epoch[ok], y[ok], "-", marker="." if ok.sum() < 50 else None, lw=1.2
                )
                last = y[ok][-1]
                ax.set_title(f"{label} (last {last:.3e})")
            else:
                ax.text(
                    0.5,
                    0.5,
                    f"no positive {label} values",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
                ax.set_title(label)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
        if title:
            fig.suptitle(title)
        _save_png(fig, out_png)

    on_root(comm, plot, "plot_history", broadcast=False)


def plot_comparison(
    out_png: str | os.PathLike,
    problem: Any,
    a: np.ndarray,
    b: np.ndarray,
    times_idx: Sequence[int],
    labels: tuple[str, str] = ("u", "h"),
    comm: Any = None,
    title: str = "",
) -> None:
    """Plot two fields side by side at chosen time levels (collective; rank 0 writes).

    Rows are the chosen levels, columns ``a``, ``b`` and ``a − b``.  The
    owned dof values and coordinates are gathered to rank 0 and drawn with
    ``tripcolor`` (Gouraud shading) on the mesh cells in dof numbering
    (P1 and P2 triangles exactly, quadrilaterals split in two; other cells
    fall back to a Delaunay triangulation of the dof points).  ``a`` and
    ``b`` share the colour scale of their row; the difference uses a
    symmetric diverging scale.  1D meshes are drawn as curves; for 3D
    meshes the dofs in a slab around the middle ``z`` plane are drawn as a
    scatter plot (noted in the figure).

    Args:
        out_png: The PNG file.
        problem: The problem (``problem.V``, ``problem.time.times``).
        a: Local values (owned + ghost) on ``problem.V``, shape ``(n_levels, n_local)``.
        b: Same shape as ``a``.
        times_idx: Time levels to show (negative indices count from the end).
        labels: Names of ``a`` and ``b``.
        comm: The communicator (default ``problem.comm``).
        title: Figure title.

    Raises:
        ValueError: On every rank, for bad shapes or time indices.
    """
    comm = problem.comm if comm is None else comm
    V = problem.V
    a = np.asarray(a)
    b = np.asarray(b)
    times = np.asarray(problem.time.times)
    error = None
    if a.ndim != 2 or a.shape != b.shape:
        error = f"plot_comparison: a and b must be 2D arrays of the same shape, got {a.shape} and {b.shape}"
    idx = [int(i) for i in times_idx]
    if error is None:
        if not idx:
            error = "plot_comparison: times_idx is empty"
        elif any(not -a.shape[0] <= i < a.shape[0] for i in idx):
            error = (
                f"plot_comparison: times_idx {idx} out of range for {a.shape[0]} levels"
            )
    collective_check(comm, error)
    idx = [i % a.shape[0] for i in idx]
    gathered = gather_owned(np.concatenate([a[idx], b[idx]]), V, comm)
    tdim = V.mesh.topology.dim
    triangles = gather_triangles(V, comm) if tdim == 2 else None
    out_png = pathlib.Path(out_png)

    def plot() -> None:
        X, U = gathered
        k = len(idx)
        A, B = U[:k], U[k:]
        D = A - B
        extent = np.ptp(X, axis=0) if X.shape[0] else np.ones(X.shape[1])
        aspect = float(extent[1] / extent[0]) if tdim >= 2 and extent[0] > 0 else 0.6
        panel_w = 3.6
        # The drawing area is ~60 % of a panel's width (ticks, colorbar); ~0.6 in for the title and ticks.
        panel_h = (
            float(np.clip(0.6 * panel_w * aspect, 1.6, 6.5)) + 0.6 if tdim >= 2 else 2.6
        )
        head = 0.55 if (title or tdim == 3) else 0.15
        height = k * panel_h + head + 0.1
        fig = _new_figure((3 * panel_w, height))
        fig.subplots_adjust(
            left=0.06,
            right=0.94,
            bottom=0.35 / height,
            top=1.0 - head / height,
            wspace=0.35,
            hspace=0.45 / (panel_h - 0.45),
        )
        axes = np.atleast_2d(fig.subplots(k, 3, squeeze=False))
        note = ""
        tri = None
        sel = slice(None)
        if tdim == 2:
            import matplotlib.tri as mtri

            if triangles is not None and len(triangles):
                tri = mtri.Triangulation(X[:, 0], X[:, 1], triangles)
            else:
                tri = mtri.Triangulation(X[:, 0], X[:, 1])
        elif tdim == 3:
            z = X[:, 2]
            zc = 0.5 * (z.min() + z.max())
            spacing = np.ptp(z) / max(1.0, round(X.shape[0] ** (1.0 / 3.0)))
            nearest = np.unique(
                z[np.argsort(np.abs(z - zc))[: max(1, X.shape[0] // 50)]]
            )
            zc = float(nearest[np.argmin(np.abs(nearest - zc))])
            sel = np.abs(z - zc) <= 0.5 * spacing
            note = f"3D mesh: dofs with |z − {zc:.3g}| ≤ {0.5 * spacing:.2g} (scatter)"
        for r, lev in enumerate(idx):
            lo = float(min(A[r].min(), B[r].min()))
            hi = float(max(A[r].max(), B[r].max()))
            if hi <= lo:
                hi = lo + 1e-12
            dmax = float(np.abs(D[r]).max()) or 1e-12
            t = float(times[lev]) if lev < len(times) else float(lev)
            panels = (
                (A[r], f"{labels[0]}  (t = {t:.4g})", "viridis", lo, hi),
                (B[r], f"{labels[1]}  (t = {t:.4g})", "viridis", lo, hi),
                (
                    D[r],
                    f"{labels[0]} − {labels[1]}  (max |·| {dmax:.2e})",
                    "RdBu_r",
                    -dmax,
                    dmax,
                ),
            )
            for c, (vals, ttl, cmap, vmin, vmax) in enumerate(panels):
                ax = axes[r, c]
                ax.set_title(ttl, fontsize=9)
                if tdim == 1:
                    order = np.argsort(X[:, 0])
                    ax.plot(X[order, 0], vals[order], lw=1.2)
                    ax.set_xlabel("x")
                    if c < 2:
                        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
                    continue
                if tdim == 2:
                    m = ax.tripcolor(
                        tri, vals, shading="gouraud", cmap=cmap, vmin=vmin, vmax=vmax
                    )
                else:
                    m = ax.scatter(
                        X[sel, 0],
                        X[sel, 1],
                        c=vals[sel],
                        s=8,
                        cmap=cmap,
                        vmin=vmin,
                        vmax=vmax,
                    )
                ax.set_aspect("equal")
                ax.tick_params(labelsize=7)
                fig.colorbar(m, ax=ax, shrink=0.9).ax.tick_params(labelsize=7)
        heading = " — ".join(s for s in (title, note) if s)
        if heading:
            fig.suptitle(heading, fontsize=10)
        _save_png(fig, out_png)

    on_root(comm, plot, "plot_comparison", broadcast=False)
