"""Sensor data files: reading and writing point values per time level.

Data files (:func:`load_point_data`, :func:`save_point_data`):

* ``.npz`` — array ``values`` of shape ``(n_levels, n_sensors)`` (required)
  and array ``points`` of shape ``(n_sensors, gdim)`` (optional).
* ``.csv`` — comma-separated text, one row per time level::

      t,s0,s1,s2
      x,0.10,0.25,0.40
      y,0.50,0.50,0.75
      0.0,0.012,0.020,0.007
      0.25,0.015,0.031,0.009
      ...

  The header's first cell is ``t``; the other header cells name the sensors
  (any labels).  Optional coordinate rows, labelled ``x``, ``y`` (and ``z``)
  in this order, directly after the header, give the sensor positions.
  Every further row is one time level: its time, then one value per sensor.
  Blank lines and lines starting with ``#`` are ignored.

In both formats a value ``nan`` marks a level without data; such levels must
not be observed (see :class:`femnpde.obs.misfit.TimeWeights`).
"""

from __future__ import annotations

import csv
import math
import io
import numbers
import os
import zipfile

import numpy as np
from mpi4py import MPI

from femnpde._mpi import on_root

__all__ = ["load_point_data", "save_point_data"]


def _file_error(path: str, message: str) -> ValueError:
    return ValueError(f"point data file {path!r}: {message}")


def _load_npz(path: str) -> tuple[np.ndarray | None, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise _file_error(path, f"not a readable .npz archive ({err})") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _file_error(path, "holds a single .npy array, not an .npz archive with arrays 'values' and 'points'")
    with archive:
        names = list(archive.files)
        if "values" not in names:
            raise _file_error(
                path, f"missing array 'values' (shape (n_levels, n_sensors)); arrays present: {names or 'none'}"
            )
        out = {}
        for name in ("values", "points"):
            if name not in names:
                continue
            try:
                arr = archive[name]
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
                raise _file_error(path, f"array {name!r} cannot be read ({err})") from err
            if arr.dtype.kind not in "iuf":
                raise _file_error(path, f"array {name!r} has dtype {arr.dtype}, expected real numbers")
            out[name] = arr.astype(np.float64)
    values = out["values"]
    if values.ndim != 2:
        raise _file_error(path, f"array 'values' has shape {values.shape}, expected 2D (n_levels, n_sensors)")
    points = out.get("points")
    if points is not None:
        if points.ndim != 2 or points.shape[0] != values.shape[1] or not 1 <= points.shape[1] <= 3:
            raise _file_error(
                path,
                f"array 'points' has shape {points.shape}, expected (n_sensors, gdim) = ({values.shape[1]}, 1..3) "
                f"to match 'values' of shape {values.shape}",
            )
        bad = np.argwhere(~np.isfinite(points))
        if bad.size:
            raise _file_error(path, f"array 'points' has a non-finite coordinate at {tuple(int(i) for i in bad[0])}")
    bad = np.argwhere(np.isinf(values))
    if bad.size:
        raise _file_error(path, f"array 'values' has an infinite entry at {tuple(int(i) for i in bad[0])}")
    return points, values


def _parse_number(path: str, text: str, line: int, col: int, label: str) -> float:
    where = f"line {line}, column {col + 1} ({label!r})"
    s = text.strip()
    if not s:
        raise _file_error(path, f"{where}: empty cell")
    try:
        x = float(s)
    except ValueError:
        raise _file_error(path, f"{where}: {s!r} is not a number") from None
    if math.isinf(x):
        raise _file_error(path, f"{where}: {s!r} is not finite")
    return x


def _load_csv(path: str) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise _file_error(path, f"not a UTF-8 text file ({err})") from err
    rows = []
    for line_no, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        rows.append((line_no, cells))
    if not rows:
        raise _file_error(path, "empty (expected a header 't,s0,s1,...' and one row per time level)")
    header_line, header = rows[0]
    labels = [c.strip() for c in header]
    if labels[0].lower() != "t":
        raise _file_error(
            path, f"line {header_line}: the header must start with 't' (then one column per sensor), got {labels[0]!r}"
        )
    if len(labels) < 2:
        raise _file_error(path, f"line {header_line}: the header has no sensor columns after 't'")
    n_cols = len(labels)
    for line_no, cells in rows[1:]:
        if len(cells) != n_cols:
            raise _file_error(
                path, f"line {line_no} has {len(cells)} cells, expected {n_cols} (the header has {n_cols} columns)"
            )
    body = rows[1:]
    coords = []
    for axis in ("x", "y", "z"):
        if body and body[0][1][0].strip().lower() == axis:
            line_no, cells = body.pop(0)
            coords.append([_parse_number(path, c, line_no, j, labels[j]) for j, c in enumerate(cells[1:], start=1)])
        else:
            break
    for line_no, cells in body:
        if cells[0].strip().lower() in ("x", "y", "z"):
            raise _file_error(
                path,
                f"line {line_no}: coordinate row {cells[0].strip()!r} out of place; coordinate rows x, y, z "
                "must come in this order directly after the header",
            )
    times = np.array([_parse_number(path, cells[0], line_no, 0, labels[0]) for line_no, cells in body])
    if times.size and np.any(np.isnan(times)):
        line_no = body[int(np.flatnonzero(np.isnan(times))[0])][0]
        raise _file_error(path, f"line {line_no}, column 1 ('t'): the time is nan")
    if times.size > 1 and np.any(np.diff(times) <= 0):
        i = int(np.flatnonzero(np.diff(times) <= 0)[0]) + 1
        raise _file_error(
            path, f"line {body[i][0]}: time {times[i]:g} does not increase (previous row: {times[i - 1]:g})"
        )
    values = np.array(
        [
            [_parse_number(path, c, line_no, j, labels[j]) for j, c in enumerate(cells[1:], start=1)]
            for line_no, cells in body
        ]
    ).reshape(len(body), n_cols - 1)
    points = np.array(coords).T.copy() if coords else None
    return points, values, times


def _read_point_data(
    path: str, n_levels: int, n_sensors: int | None, times: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray]:
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise FileNotFoundError(f"point data file {path!r} does not exist")
    if ext == ".npz":
        points, values = _load_npz(path)
        file_times = None
        what_rows = "rows of 'values' (time levels)"
    elif ext == ".csv":
        points, values, file_times = _load_csv(path)
        what_rows = "time-level rows"
    else:
        raise _file_error(path, f"unknown extension {ext!r}; use .npz or .csv")
    if values.shape[0] != n_levels:
        raise _file_error(
            path, f"has {values.shape[0]} {what_rows}, expected n_levels = {n_levels} (n_steps + 1, one per time level)"
        )
    if n_sensors is not None and values.shape[1] != n_sensors:
        raise _file_error(path, f"has data for {values.shape[1]} sensors, expected {n_sensors}")
    if times is not None and file_times is not None:
        ref = np.asarray(times, dtype=np.float64)
        tol = 1e-8 * max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
        off = np.flatnonzero(np.abs(file_times - ref) > tol)
        if off.size:
            n = int(off[0])
            raise _file_error(
                path, f"time of level {n} is {file_times[n]:.10g}, but the time grid has t_{n} = {ref[n]:.10g}"
            )
    return points, values


def load_point_data(
    path: str | os.PathLike,
    n_levels: int,
    n_sensors: int | None = None,
    *,
    times: np.ndarray | None = None,
    comm: MPI.Comm | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Read sensor data from an ``.npz`` or ``.csv`` file (formats in the module docstring).

    Args:
        path: The file.
        n_levels: Expected number of time levels (``n_steps + 1``).
        n_sensors: Expected number of sensors (not checked if None).
        times: The time grid; if given, the ``t`` column of a CSV file must
            match it (to 1e-8 relative).
        comm: If given, rank 0 reads the file and broadcasts the result (or
            the error) to all ranks of ``comm`` (collective).

    Returns:
        ``(points, values)``: the sensor coordinates ``(n_sensors, gdim)`` if
        the file has them, else None, and the values ``(n_levels, n_sensors)``.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is malformed; the message names the file and
            the problem (missing array, wrong shape, non-numeric cell with its
            line and column, wrong number of rows, ...).
    """
    if not isinstance(n_levels, numbers.Integral) or n_levels < 1:
        raise ValueError(f"load_point_data: n_levels={n_levels!r} must be an integer >= 1")
    if n_sensors is not None and (not isinstance(n_sensors, numbers.Integral) or n_sensors < 1):
        raise ValueError(f"load_point_data: n_sensors={n_sensors!r} must be an integer >= 1 or None")
    if times is not None and np.shape(times) != (n_levels,):
        raise ValueError(f"load_point_data: times has shape {np.shape(times)}, expected ({n_levels},)")
    path = os.fspath(path)
    return on_root(comm, lambda: _read_point_data(path, int(n_levels), n_sensors, times), f"reading {path!r}")


def save_point_data(
    path: str | os.PathLike,
    points: np.ndarray | None,
    values: np.ndarray,
    *,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> None:
    """Write sensor data as an ``.npz`` file readable by :func:`load_point_data` (collective).

    Rank 0 of ``comm`` writes exactly ``path`` (no extension is added); the
    file exists on return on every rank.

    Args:
        path: The output file (conventionally ``*.npz``).
        points: Sensor coordinates ``(n_sensors, gdim)``, or None.
        values: Observed values ``(n_levels, n_sensors)``.
        comm: The communicator whose rank 0 writes.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"save_point_data: values have shape {values.shape}, expected (n_levels, n_sensors)")
    arrays = {"values": values}
    if points is not None:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[0] != values.shape[1] or not 1 <= points.shape[1] <= 3:
            raise ValueError(
                f"save_point_data: points have shape {points.shape}, expected (n_sensors, gdim) = "
                f"({values.shape[1]}, 1..3)"
            )
        arrays["points"] = points
    path = os.fspath(path)

    def write() -> None:
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    on_root(comm, write, f"writing {path!r}", broadcast=False)

