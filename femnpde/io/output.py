"""Run-directory outputs of a training run: history, checkpoints, fields, plots.

Everything here is MPI-aware.  Files are written by rank 0 only (history,
checkpoints, text files, PNG plots) except the field time series, which are
written collectively by DOLFINx (ADIOS2 ``.bp`` or XDMF/HDF5).  Functions that
take a communicator are *collective*: call them on every rank
(:meth:`History.append` and :meth:`Progress.update` are cheap and never
communicate, and :meth:`History.read` reads locally: put a barrier between a
rank-0 append and a read on other ranks).  When rank 0 fails to write, the
error is broadcast so that every rank raises (rank 0 the original exception,
the other ranks the same built-in kind -- ValueError, TypeError, OSError or
RuntimeError -- with its message) instead of some ranks hanging in the next
collective call.

Contents:

* :class:`RunDirectory` -- the output directory of a run; atomic text files.
* :class:`History` -- the per-epoch CSV history (flushed row by row).
* :func:`save_checkpoint` / :func:`load_checkpoint` -- atomic ``.npz``
  checkpoints of the parameters and of nested optimizer/schedule states,
  restored exactly (bitwise arrays; Python scalars, strings, ``None``).
* :func:`write_fields` -- time series of fields for ParaView (VTX or XDMF).
* :func:`gather_owned` -- owned dof values and coordinates, gathered to rank 0
  in global dof order.
* :func:`plot_history`, :func:`plot_comparison` -- PNG figures (matplotlib,
  Agg canvas, imported lazily).
* :class:`Progress`, :func:`rank0_print` -- console output on rank 0.

Importing this module has no side effects; matplotlib and tqdm are imported
only when a plot or a progress bar is made.
"""

from __future__ import annotations

import contextlib
import csv
import json
import numbers
import os
import pathlib
import re
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

import numpy as np

__all__ = [
    "HISTORY_COLUMNS",
    "History",
    "Progress",
    "RunDirectory",
    "gather_owned",
    "load_checkpoint",
    "plot_comparison",
    "plot_history",
    "plot_width_study",
    "rank0_print",
    "save_checkpoint",
    "write_fields",
]

#: Columns of the CSV training history, in file order.
HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch",
    "loss",
    "relative_rmse",
    "relative_max_error",
    "gradient_norm",
    "learning_rate",
    "wall_time",
)

_CHECKPOINT_FORMAT = "femnpde-checkpoint"
_CHECKPOINT_VERSION = 1
_MANIFEST_KEY = "__femnpde_manifest__"
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


# ---------------------------------------------------------------------------
# MPI helpers
# ---------------------------------------------------------------------------
def _rank(comm: Any) -> int:
    return 0 if comm is None else comm.rank


def _size(comm: Any) -> int:
    return 1 if comm is None else comm.size


def _on_rank0(comm: Any, what: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 and make every rank agree on the outcome.

    Returns ``fn()``'s value on rank 0 (``None`` elsewhere).  If ``fn`` raised
    on rank 0, rank 0 re-raises it and every other rank raises an exception
    of the same built-in kind (ValueError, TypeError, OSError, else
    RuntimeError) naming ``what`` and the message (collective).
    """
    err: BaseException | None = None
    result = None
    if _rank(comm) == 0:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
            err = exc
    info = None
    if err is not None:
        kind = next((k.__name__ for k in _KINDS if isinstance(err, k)), "RuntimeError")
        info = (kind, f"{type(err).__name__}: {err}")
    if _size(comm) > 1:
        info = comm.bcast(info, root=0)
    if info is not None:
        if err is not None:
            raise err
        kind = {k.__name__: k for k in _KINDS}.get(info[0], RuntimeError)
        raise kind(f"{what} failed on rank 0: {info[1]}")
    return result


_KINDS: tuple[type[Exception], ...] = (ValueError, TypeError, OSError, RuntimeError)


def _collective_check(comm: Any, error: str | None) -> None:
    """Raise ``ValueError`` on every rank if any rank reports an error message."""
    errors = [error] if _size(comm) == 1 else comm.allgather(error)
    bad = [(r, e) for r, e in enumerate(errors) if e is not None]
    if bad:
        r, e = bad[0]
        raise ValueError(e if _size(comm) == 1 else f"{e} (rank {r})")


def rank0_print(comm: Any, *args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only (flushed by default).

    Args:
        comm: The communicator (``None`` means serial).
        *args: Passed to :func:`print`.
        **kwargs: Passed to :func:`print` (``flush`` defaults to True).
    """
    if _rank(comm) == 0:
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)


# ---------------------------------------------------------------------------
# Atomic file writes
# ---------------------------------------------------------------------------
def _fsync_dir(directory: pathlib.Path) -> None:
    """fsync a directory so a rename in it is durable (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_file_mode() -> int:
    """``0o666`` minus the process umask (the mode ``open`` would give a new file)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(
    path: pathlib.Path, write: Callable[[Any], None], binary: bool = True
) -> None:
    """Write ``path`` atomically: temporary file in the same directory, fsync, ``os.replace``.

    ``write(fileobj)`` fills the temporary file.  On any error the temporary
    file is removed and a previous ``path`` is left untouched.
    """
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(
            fd,
            "wb" if binary else "w",
            **({} if binary else {"encoding": "utf-8", "newline": ""}),
        ) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_file_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


# ---------------------------------------------------------------------------
# Run directory
# ---------------------------------------------------------------------------
class RunDirectory:
    """The output directory of one run.

    Rank 0 creates the directory (with parents) and checks that it is
    writable; all ranks then meet at a barrier.

    Args:
        path: The directory.
        comm: The communicator (collective).

    Attributes:
        path: The directory, as an absolute :class:`pathlib.Path`.
        comm: The communicator.

    Raises:
        ValueError: On every rank, if the directory cannot be created or is
            not writable (the message names the path).
    """

    def __init__(self, path: str | os.PathLike, comm: Any) -> None:
        self.path = pathlib.Path(
            os.path.normpath(pathlib.Path(path).expanduser().absolute())
        )
        self.comm = comm
        error = None
        if _rank(comm) == 0:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                fd, probe = tempfile.mkstemp(dir=self.path, prefix=".write-test.")
                os.close(fd)
                os.unlink(probe)
            except OSError as exc:
                error = (
                    f"RunDirectory: cannot use '{self.path}' as the output directory "
                    f"({exc.strerror or exc}); choose a writable location"
                )
        if _size(comm) > 1:
            error = comm.bcast(error, root=0)
        if error is not None:
            raise ValueError(error)
        if comm is not None:
            comm.barrier()

    def __truediv__(self, name: str | os.PathLike) -> pathlib.Path:
        """``run / "history.csv"`` is the path of a file in the directory."""
        return self.path / name

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def write_text(self, name: str, text: str) -> None:
        """Write a text file in the directory atomically (rank 0; collective).

        Args:
            name: File name relative to the directory (subdirectories must exist).
            text: The content (UTF-8).

        Raises:
            ValueError: ``name`` leaves the directory.
        """
        target = pathlib.Path(os.path.normpath(self.path / name))
        if self.path not in target.parents:
            raise ValueError(
                f"RunDirectory.write_text: {name!r} is not a file inside {self.path}"
            )
        _on_rank0(
            self.comm,
            f"RunDirectory.write_text({name!r})",
            lambda: _atomic_write(target, lambda f: f.write(text), binary=False),
        )


# ---------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------
def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))  # shortest exact round trip
    raise TypeError(
        f"History: value {value!r} of type {type(value).__name__} is not a number"
    )


class History:
    """The CSV training history (written by rank 0).

    Columns: :data:`HISTORY_COLUMNS` (``epoch, loss, relative_rmse,
    relative_max_error, gradient_norm, learning_rate, wall_time``).  Each
    row is written and flushed by :meth:`append`, so a killed run keeps its
    history.  An existing file with the same columns is appended to (resume;
    use :meth:`truncate_after` to drop epochs after the checkpoint), unless
    ``overwrite`` is True.

    Args:
        path: The CSV file.
        comm: The communicator (collective).
        header_comment: Text written at the top of a new file, each line
            prefixed by ``# `` (e.g. the definition of the relative RMSE).
        overwrite: Start a new file even if one exists.

    Raises:
        ValueError: The existing file has other columns, or cannot be written.
    """

    columns: tuple[str, ...] = HISTORY_COLUMNS

    def __init__(
        self,
        path: str | os.PathLike,
        comm: Any,
        header_comment: str = "",
        *,
        overwrite: bool = False,
    ) -> None:
        self.path = pathlib.Path(path).absolute()
        self.comm = comm
        self.header_comment = header_comment

        def init() -> None:
            if not overwrite and self.path.exists() and self.path.stat().st_size > 0:
                _, header, _ = self._read_raw(self.path)
                if tuple(header) != self.columns:
                    raise ValueError(
                        f"History: '{self.path}' has columns {header}, expected {list(self.columns)}; "
                        "use another file or overwrite=True"
                    )
                if not self.path.read_bytes().endswith(b"\n"):
                    # A row torn by a kill: rewrite without it so appends start on a new line.
                    self._rewrite(lambda rows: rows)
                return
            try:
                _atomic_write(
                    self.path, lambda f: f.write(self._header_text()), binary=False
                )
            except OSError as exc:
                raise ValueError(
                    f"History: cannot write '{self.path}' ({exc})"
                ) from exc

        _on_rank0(comm, "History", init)

    def _header_text(self) -> str:
        lines = (
            [f"# {line}".rstrip() for line in self.header_comment.splitlines()]
            if self.header_comment
            else []
        )
        lines.append(",".join(self.columns))
        return "\n".join(lines) + "\n"

    def append(self, **row: Any) -> None:
        """Append one row (rank 0 writes and flushes; call on every rank).

        Args:
            **row: Values by column name; missing columns are left empty
                (read back as NaN).

        Raises:
            ValueError: An unknown column name.
        """
        unknown = sorted(set(row) - set(self.columns))
        if unknown:
            raise ValueError(
                f"History.append: unknown column(s) {unknown}; valid: {', '.join(self.columns)}"
            )
        if _rank(self.comm) != 0:
            return
        line = ",".join(_format_cell(row.get(c)) for c in self.columns) + "\n"
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            f.write(line)
            f.flush()

    def truncate_after(self, epoch: int) -> None:
        """Drop the rows with ``epoch > epoch`` (rank 0, atomic rewrite; collective).

        Comment lines and the header are kept.

        Args:
            epoch: The last epoch to keep (e.g. the epoch of the checkpoint
                a run resumes from).
        """

        i = self.columns.index("epoch")
        _on_rank0(
            self.comm,
            "History.truncate_after",
            lambda: self._rewrite(
                lambda rows: [
                    r for r in rows if not (r[i] != "" and float(r[i]) > epoch)
                ]
            ),
        )

    def _rewrite(self, select: Callable[[list[list[str]]], list[list[str]]]) -> None:
        """Atomically rewrite the file keeping comments, header and ``select(rows)``."""
        comments, header, rows = self._read_raw(self.path)
        kept = select(rows)

        def write(f: Any) -> None:
            for c in comments:
                f.write(c + "\n")
            f.write(",".join(header) + "\n")
            for r in kept:
                f.write(",".join(r) + "\n")

        _atomic_write(self.path, write, binary=False)

    @staticmethod
    def _read_raw(path: pathlib.Path) -> tuple[list[str], list[str], list[list[str]]]:
        """Comment lines, header and rows (as strings) of a history file."""
        try:
            text = pathlib.Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(
                f"History: cannot read '{path}' ({exc.strerror or exc})"
            ) from exc
        comments: list[str] = []
        body: list[str] = []
        for line in text.splitlines():
            if not body and line.startswith("#"):
                comments.append(line)
            elif line.strip():
                body.append(line)
        if not body:
            raise ValueError(f"History: '{path}' has no header line")
        reader = csv.reader(body)
        header = [h.strip() for h in next(reader)]
        rows = []
        for k, r in enumerate(reader, start=2):
            if len(r) != len(header):
                # A row cut short by a kill: ignore a torn last line, reject others.
                if k == len(body) and len(r) < len(header):
                    continue
                raise ValueError(
                    f"History: '{path}' row {k} has {len(r)} fields, expected {len(header)}"
                )
            rows.append(r)
        return comments, header, rows

    @staticmethod
    def read(path: str | os.PathLike) -> dict[str, np.ndarray]:
        """Read a history file (no MPI; any rank may call it).

        Args:
            path: The CSV file.

        Returns:
            Column name -> values; ``epoch`` as int64, the others float64
            (empty cells are NaN).

        Raises:
            ValueError: The file is missing or malformed.
        """
        _, header, rows = History._read_raw(pathlib.Path(path))
        out: dict[str, np.ndarray] = {}
        for j, name in enumerate(header):
            try:
                vals = np.array(
                    [float(r[j]) if r[j].strip() != "" else np.nan for r in rows],
                    dtype=np.float64,
                )
            except ValueError as exc:
                raise ValueError(
                    f"History: '{path}' column {name!r} is not numeric ({exc})"
                ) from exc
            if name == "epoch" and np.all(np.isfinite(vals)):
                out[name] = vals.astype(np.int64)
            else:
                out[name] = vals
        return out


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------
class _Encoder:
    """Encodes a nested state into npz arrays plus a JSON manifest.

    Arrays (and numpy scalars) become npz members named by their key path
    (``optimizer_state/m``); the manifest records the structure and the
    exact Python scalars (JSON round-trips floats exactly, inf/nan included).
    """

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def _member(self, prefix: str) -> str:
        name = prefix or "value"
        if name == _MANIFEST_KEY or name in self.arrays:
            k = 1
            while f"{name}#{k}" in self.arrays:
                k += 1
            name = f"{name}#{k}"
        return name

    def _array(self, value: np.ndarray, prefix: str) -> str:
        if value.dtype.hasobject:
            raise TypeError(
                f"checkpoint: array at {prefix!r} has dtype object, which cannot be saved without pickle"
            )
        name = self._member(prefix)
        self.arrays[name] = value
        return name

    def encode(self, value: Any, prefix: str) -> Any:
        if value is None:
            return {"t": "none"}
        if isinstance(value, bool):
            return {"t": "bool", "v": value}
        if isinstance(value, np.ndarray):
            return {"t": "array", "k": self._array(value, prefix)}
        if isinstance(value, np.generic):
            return {"t": "npscalar", "k": self._array(np.asarray(value), prefix)}
        if isinstance(value, int):
            return {"t": "int", "v": int(value)}
        if isinstance(value, float):
            return {"t": "float", "v": float(value)}
        if isinstance(value, str):
            return {"t": "str", "v": value}
        if isinstance(value, Mapping):
            items = []
            for key, val in value.items():
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise TypeError(
                        f"checkpoint: key {key!r} at {prefix!r} is not a str, int, float, bool or None"
                    )
                sub = f"{prefix}/{key}" if prefix else str(key)
                items.append(
                    [
                        self.encode(key, "") if not isinstance(key, str) else key,
                        self.encode(val, sub),
                    ]
                )
            return {"t": "dict", "items": items}
        if isinstance(value, (list, tuple)):
            return {
                "t": "list" if isinstance(value, list) else "tuple",
                "items": [self.encode(v, f"{prefix}/{i}") for i, v in enumerate(value)],
            }
        raise TypeError(
            f"checkpoint: value at {prefix!r} of type {type(value).__name__} is not supported; use numpy arrays, "
            "numbers, str, bool, None, and dicts/lists/tuples of them"
        )


def _decode(node: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if not isinstance(node, dict):  # a plain str dict key
        return node
    t = node["t"]
    if t == "none":
        return None
    if t in ("bool", "int", "float", "str"):
        return {"bool": bool, "int": int, "float": float, "str": str}[t](node["v"])
    if t == "array":
        return arrays[node["k"]]
    if t == "npscalar":
        return arrays[node["k"]][()]
    if t == "dict":
        return {_decode(k, arrays): _decode(v, arrays) for k, v in node["items"]}
    if t in ("list", "tuple"):
        items = [_decode(v, arrays) for v in node["items"]]
        return items if t == "list" else tuple(items)
    raise ValueError(f"unknown node type {t!r}")


def _write_npz(fileobj: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an (uncompressed) ``.npz`` to an open binary file."""
    np.savez(fileobj, **arrays)


def save_checkpoint(
    path: str | os.PathLike,
    comm: Any,
    *,
    epoch: int,
    params: np.ndarray,
    optimizer_state: Mapping[str, Any],
    schedule_state: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Save a training checkpoint as an ``.npz`` file, atomically (rank 0; collective).

    The file is written to a temporary file in the same directory, fsynced
    and moved over ``path`` with :func:`os.replace`, so ``path`` is always
    either the previous checkpoint or the new one, never a partial file.
    Pass e.g. ``run / "checkpoint_latest.npz"`` to keep a rolling latest
    checkpoint.

    Arrays are stored bitwise as npz members named by their key path
    (``params``, ``optimizer_state/m``, ``extra/foo/0``, ...); the nesting
    and the Python scalars (int, float incl. inf/nan, str, bool, None) are
    stored exactly in a JSON manifest; numpy scalars keep their dtype.  No
    pickle is used.  Parameters are taken from rank 0 (they are replicated).
    A failure on rank 0 is raised on every rank (same kind of exception).

    Args:
        path: The ``.npz`` file.
        comm: The communicator.
        epoch: The number of completed epochs.
        params: The flat parameter vector.
        optimizer_state: ``optimizer.state_dict()`` (nested dicts, lists,
            tuples of arrays and scalars).
        schedule_state: ``schedule.state_dict()`` or None.
        extra: Anything else of the same kinds (e.g. the best loss, RNG state).

    Raises:
        TypeError: A value cannot be stored (object arrays, other types).
        OSError: Writing failed.
    """
    path = pathlib.Path(path)

    def write() -> None:
        enc = _Encoder()
        manifest = {
            "format": _CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "data": enc.encode(
                {
                    "epoch": int(epoch),
                    "params": np.asarray(params),
                    "optimizer_state": dict(optimizer_state)
                    if optimizer_state is not None
                    else None,
                    "schedule_state": dict(schedule_state)
                    if schedule_state is not None
                    else None,
                    "extra": dict(extra) if extra is not None else None,
                },
                "",
            ),
        }
        arrays = dict(enc.arrays)
        arrays[_MANIFEST_KEY] = np.frombuffer(
            json.dumps(manifest).encode("utf-8"), dtype=np.uint8
        )
        _atomic_write(path, lambda f: _write_npz(f, arrays))

    _on_rank0(comm, f"save_checkpoint('{path}')", write)


def _read_checkpoint(path: pathlib.Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        manifest = json.loads(bytes(arrays.pop(_MANIFEST_KEY)).decode("utf-8"))
        if manifest.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError("not a femnpde checkpoint")
        if int(manifest.get("version", -1)) > _CHECKPOINT_VERSION:
            raise ValueError(
                f"checkpoint format version {manifest['version']} is newer than this femnpde"
            )
        data = _decode(manifest["data"], arrays)
    except FileNotFoundError as exc:
        raise ValueError(
            f"load_checkpoint: the checkpoint '{path}' does not exist"
        ) from exc
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        EOFError,
        zipfile.BadZipFile,
        UnicodeDecodeError,
    ) as exc:
        raise ValueError(
            f"load_checkpoint: '{path}' is not a readable femnpde checkpoint ({exc})"
        ) from exc
    return data


def load_checkpoint(path: str | os.PathLike, comm: Any) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (rank 0 reads, broadcasts; collective).

    Args:
        path: The ``.npz`` file.
        comm: The communicator.

    Returns:
        ``{"epoch": int, "params": ndarray, "optimizer_state": dict,
        "schedule_state": dict | None, "extra": dict | None}``, with the
        values exactly as saved, on every rank.

    Raises:
        ValueError: On every rank, if the file is missing or corrupt (the
            message names the file).
    """
    path = pathlib.Path(path)
    result: Any = None
    if _rank(comm) == 0:
        try:
            result = ("ok", _read_checkpoint(path))
        except ValueError as exc:
            result = ("error", str(exc))
    if _size(comm) > 1:
        result = comm.bcast(result, root=0)
    if result[0] == "error":
        raise ValueError(result[1])
    return result[1]


# ---------------------------------------------------------------------------
# Gathering
# ---------------------------------------------------------------------------
def _owned_part(
    values: np.ndarray, V: Any, what: str
) -> tuple[np.ndarray | None, str | None]:
    imap = V.dofmap.index_map
    n_owned = imap.size_local
    n_local = n_owned + imap.num_ghosts
    values = np.asarray(values)
    if V.dofmap.index_map_bs != 1:
        return (
            None,
            f"{what}: only scalar spaces are supported (block size {V.dofmap.index_map_bs})",
        )
    if values.ndim not in (1, 2) or values.shape[-1] not in (n_owned, n_local):
        return None, (
            f"{what}: values of shape {values.shape} do not fit the space: the last axis must hold "
            f"the {n_local} local (owned + ghost) or {n_owned} owned dof values"
        )
    return np.ascontiguousarray(values[..., :n_owned], dtype=np.float64), None


def gather_owned(
    problem_space_values: np.ndarray, V: Any, comm: Any
) -> tuple[np.ndarray, np.ndarray] | None:
    """Gather the owned dof values and coordinates of a scalar space to rank 0 (collective).

    Args:
        problem_space_values: Local values on ``V``, shape ``(n_local,)`` or
            ``(k, n_local)`` (owned + ghost entries; owned-only arrays are
            accepted too).
        V: The (scalar) function space.
        comm: The communicator of ``V``'s mesh.

    Returns:
        On rank 0, ``(coords, values)`` in global dof order: ``coords`` of
        shape ``(N, gdim)`` and ``values`` of shape ``(N,)`` or ``(k, N)``,
        with ``N`` the global number of dofs.  ``None`` on the other ranks.

    Raises:
        ValueError: On every rank, if the values do not fit ``V`` on some rank.
    """
    owned, error = _owned_part(problem_space_values, V, "gather_owned")
    _collective_check(comm, error)
    imap = V.dofmap.index_map
    n_owned = imap.size_local
    gdim = V.mesh.geometry.dim
    coords = np.ascontiguousarray(V.tabulate_dof_coordinates()[:n_owned, :gdim])
    start = imap.local_range[0]
    parts = (
        [(start, coords, owned)]
        if _size(comm) == 1
        else comm.gather((start, coords, owned), root=0)
    )
    if _rank(comm) != 0:
        return None
    n_global = imap.size_global
    X = np.empty((n_global, gdim))
    U = np.empty(owned.shape[:-1] + (n_global,))
    for s, c, v in parts:
        X[s : s + c.shape[0]] = c
        U[..., s : s + c.shape[0]] = v
    return X, U


def _gather_triangles(V: Any, comm: Any) -> np.ndarray | None:
    """Triangles (global dof indices) covering a 2D mesh, gathered to rank 0.

    Lagrange dofs on triangles: degree 1 uses the cells, degree 2 splits each
    cell into four sub-triangles, higher degrees use the vertex dofs only.
    Quadrilaterals are split into two triangles through their vertex dofs.
    Returns None (on rank 0) when the cell type is not supported.
    """
    mesh = V.mesh
    tdim = mesh.topology.dim
    cell_name = mesh.topology.cell_type.name
    n_cells = mesh.topology.index_map(tdim).size_local
    dofs = V.dofmap.list[:n_cells]
    if "triangle" in cell_name:
        if dofs.shape[1] == 6 and V.ufl_element().degree == 2:
            # basix P2 triangle: vertices 0, 1, 2; edge dofs 3 (v1 v2), 4 (v0 v2), 5 (v0 v1).
            local = np.array([[0, 5, 4], [5, 1, 3], [4, 3, 2], [5, 3, 4]])
        else:
            local = np.array([[0, 1, 2]])
    elif "quadrilateral" in cell_name:
        local = np.array([[0, 1, 3], [0, 3, 2]])
    else:
        local = None
    tris = None
    if local is not None:
        loc = dofs[:, local].reshape(-1, 3)
        tris = V.dofmap.index_map.local_to_global(
            loc.reshape(-1).astype(np.int32)
        ).reshape(-1, 3)
    parts = [tris] if _size(comm) == 1 else comm.gather(tris, root=0)
    if _rank(comm) != 0:
        return None
    if any(p is None for p in parts):
        return None
    return np.concatenate(parts).astype(np.int64)


# ---------------------------------------------------------------------------
# Fields for ParaView
# ---------------------------------------------------------------------------
class _QuadratureProjector:
    """L2 projection of quadrature-space values onto P1 (consistent mass, CG + Jacobi)."""

    def __init__(self, problem: Any) -> None:
        import dolfinx.fem
        import dolfinx.fem.petsc
        import ufl
        from petsc4py import PETSc

        self._PETSc = PETSc
        mesh = problem.mesh
        self.W = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        self.g = dolfinx.fem.Function(problem.G)
        w, v = ufl.TrialFunction(self.W), ufl.TestFunction(self.W)
        dx = ufl.dx(metadata={"quadrature_degree": int(problem.quadrature_degree)})
        self.a = dolfinx.fem.form(ufl.inner(w, v) * dx)
        self.L = dolfinx.fem.form(ufl.inner(self.g, v) * dx)
        self.A = dolfinx.fem.petsc.assemble_matrix(self.a)
        self.A.assemble()
        self.b = dolfinx.fem.petsc.create_vector(self.W)
        self.ksp = PETSc.KSP().create(mesh.comm)
        self.ksp.setOperators(self.A)
        self.ksp.setType("cg")
        self.ksp.getPC().setType("jacobi")
        self.ksp.setTolerances(rtol=1e-12, atol=1e-30, max_it=1000)

    def project(self, owned_values: np.ndarray, out: Any) -> None:
        import dolfinx.fem.petsc

        PETSc = self._PETSc
        n = self.g.function_space.dofmap.index_map.size_local
        self.g.x.array[:n] = owned_values
        self.g.x.scatter_forward()
        with self.b.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(self.b, self.L)
        self.b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        self.ksp.solve(self.b, out.x.petsc_vec)
        out.x.scatter_forward()

    def destroy(self) -> None:
        for obj in (self.ksp, self.A, self.b):
            obj.destroy()


def write_fields(
    path: str | os.PathLike,
    problem: Any,
    fields: Mapping[str, np.ndarray],
    times: np.ndarray,
    fmt: str = "vtx",
    *,
    spaces: Mapping[str, str] | None = None,
) -> list[pathlib.Path]:
    """Write time series of fields for ParaView (collective).

    Each field is an array of shape ``(n_levels, n_local)`` of local values
    (owned + ghost) on ``problem.V`` (e.g. ``solver.states.array``), or
    ``(n_levels, n_owned_source)`` of owned values on ``problem.G`` (e.g.
    the network source).  The space is recognised from the shape (``V`` wins
    when both fit, which happens in serial when ``G`` has as many dofs as
    ``V``); ``spaces={"name": "G"}`` forces it.  Source values on a
    *quadrature* space are L2-projected onto continuous P1 for output.

    Files, with ``path`` a location without extension (a ``.bp``/``.xdmf``
    suffix is dropped), e.g. ``run / "fields"``:

    * ``fmt="vtx"``: one ADIOS2 directory per function space,
      ``<path>_<name1>-<name2>....bp`` (:class:`dolfinx.io.VTXWriter`): the
      fields that share a space (e.g. u, h and the adjoint) open in ParaView
      as one dataset with time steps; the mesh is written once, and
      higher-degree Lagrange fields are written exactly.
    * ``fmt="xdmf"``: one ``<path>.xdmf`` (+ ``<path>.h5``) holding the
      mesh and all fields at every time.  XDMF stores fields of the mesh's
      own degree only, so higher-degree fields (e.g. P2) are interpolated
      onto the Lagrange space of the mesh's degree (their values at the mesh
      nodes); use VTX for the exact P2 fields.

    Args:
        path: Output location without extension.
        problem: The :class:`~femnpde.fem.problem.ParabolicProblem`.
        fields: Field name (letters, digits, ``_ . -``) -> values.
        times: The times of the levels, shape ``(n_levels,)``.
        fmt: ``"vtx"`` or ``"xdmf"``.
        spaces: Optional field name -> ``"V"`` or ``"G"``.

    Returns:
        The paths written (the ``.bp`` directories, or the ``.xdmf`` file).

    Raises:
        ValueError: Unknown format, bad names or shapes (on every rank).
    """
    import dolfinx.fem
    import dolfinx.io

    comm = problem.comm
    if fmt not in ("vtx", "xdmf"):
        raise ValueError(f"write_fields: fmt={fmt!r} is not valid; use 'vtx' or 'xdmf'")
    if fmt == "vtx" and not getattr(dolfinx, "has_adios2", False):
        raise ValueError(
            "write_fields: fmt='vtx' needs DOLFINx built with ADIOS2; use fmt='xdmf'"
        )
    if not fields:
        raise ValueError("write_fields: no fields given")
    spaces = dict(spaces or {})
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    n_levels = times.shape[0]
    V, G = problem.V, problem.G
    n_local_v = V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts
    n_owned_g = G.dofmap.index_map.size_local

    # Which space each field lives on, agreed on by all ranks.
    error = None
    candidates: dict[str, set[str]] = {}
    for name, arr in fields.items():
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            error = f"write_fields: field name {name!r} is not valid; use letters, digits, '_', '.', '-'"
            break
        arr = np.asarray(arr)
        if arr.ndim != 2 or arr.shape[0] != n_levels:
            error = f"write_fields: field {name!r} has shape {arr.shape}, expected ({n_levels}, n_dofs) for {n_levels} times"
            break
        c = set()
        if arr.shape[1] == n_local_v:
            c.add("V")
        if arr.shape[1] == n_owned_g:
            c.add("G")
        if name in spaces:
            if spaces[name] not in ("V", "G"):
                error = f"write_fields: spaces[{name!r}]={spaces[name]!r} is not valid; use 'V' or 'G'"
                break
            c &= {spaces[name]}
        if not c:
            error = (
                f"write_fields: field {name!r} has {arr.shape[1]} values per level; expected {n_local_v} "
                f"(local values on V) or {n_owned_g} (owned values on G)"
            )
            break
        candidates[name] = c
    _collective_check(comm, error)
    all_candidates = [candidates] if _size(comm) == 1 else comm.allgather(candidates)
    space_of: dict[str, str] = {}
    for name in fields:
        common = set.intersection(*(c[name] for c in all_candidates))
        if not common:
            raise ValueError(
                f"write_fields: the shape of field {name!r} does not fit the same space on every rank"
            )
        space_of[name] = "V" if "V" in common else "G"

    path = pathlib.Path(path).absolute()
    if path.suffix in (".bp", ".xdmf", ".h5"):
        path = path.with_suffix("")
    _on_rank0(
        comm, "write_fields", lambda: path.parent.mkdir(parents=True, exist_ok=True)
    )
    if comm is not None:
        comm.barrier()

    quadrature = getattr(problem, "source_kind", "lagrange") == "quadrature"
    projector = (
        _QuadratureProjector(problem)
        if quadrature and "G" in space_of.values()
        else None
    )
    funcs: dict[str, Any] = {}
    for name in fields:
        if space_of[name] == "V":
            funcs[name] = dolfinx.fem.Function(V, name=name)
        elif projector is not None:
            funcs[name] = dolfinx.fem.Function(projector.W, name=name)
        else:
            funcs[name] = dolfinx.fem.Function(G, name=name)
    # XDMF: fields of another degree than the mesh's are written interpolated
    # onto the Lagrange space of the mesh's degree (one such space for all).
    mesh_degree = problem.mesh.geometry.cmaps[0].degree
    xdmf_funcs = dict(funcs)
    if fmt == "xdmf":
        nodal = None
        for name, f in funcs.items():
            if f.function_space.ufl_element().embedded_superdegree != mesh_degree:
                if nodal is None:
                    nodal = dolfinx.fem.functionspace(problem.mesh, ("Lagrange", mesh_degree))
                xdmf_funcs[name] = dolfinx.fem.Function(nodal, name=name)
    # VTX: one file per function space, in the order the fields were given.
    groups: dict[str, list[str]] = {}
    for name in fields:
        groups.setdefault(space_of[name], []).append(name)

    def load(n: int) -> None:
        for name, arr in fields.items():
            f = funcs[name]
            values = np.asarray(arr)[n]
            if space_of[name] == "V":
                f.x.array[:] = values
                f.x.scatter_forward()
            elif projector is not None:
                projector.project(values, f)
            else:
                f.x.array[:n_owned_g] = values
                f.x.scatter_forward()
            if xdmf_funcs[name] is not f:
                xdmf_funcs[name].interpolate(f)

    written: list[pathlib.Path] = []
    try:
        if fmt == "vtx":
            written = [path.parent / f"{path.name}_{'-'.join(names)}.bp" for names in groups.values()]
            with contextlib.ExitStack() as stack:
                writers = [
                    stack.enter_context(
                        dolfinx.io.VTXWriter(
                            comm,
                            p,
                            [funcs[name] for name in names],
                            engine="BPFile",
                            mesh_policy=dolfinx.io.VTXMeshPolicy.reuse,
                        )
                    )
                    for p, names in zip(written, groups.values())
                ]
                for n in range(n_levels):
                    load(n)
                    for w in writers:
                        w.write(float(times[n]))
        else:
            target = path.with_suffix(".xdmf")
            with dolfinx.io.XDMFFile(comm, target, "w") as xdmf:
                xdmf.write_mesh(problem.mesh)
                for n in range(n_levels):
                    load(n)
                    for name in fields:
                        xdmf.write_function(xdmf_funcs[name], float(times[n]))
            written = [target]
    finally:
        if projector is not None:
            projector.destroy()
    return written


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------
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
    _atomic_write(out_png, lambda f: fig.savefig(f, format="png", dpi=120))


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
    if _rank(comm) != 0:
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

    _on_rank0(comm, "plot_history", plot)


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
    _collective_check(comm, error)
    idx = [i % a.shape[0] for i in idx]
    gathered = gather_owned(np.concatenate([a[idx], b[idx]]), V, comm)
    tdim = V.mesh.topology.dim
    triangles = _gather_triangles(V, comm) if tdim == 2 else None
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

    _on_rank0(comm, "plot_comparison", plot)


# ---------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------
class Progress:
    """A tqdm progress bar over epochs, on rank 0 only.

    Shown on rank 0 unless ``quiet``; other ranks print nothing.  Without
    tqdm, a plain line is printed every ~5 % of the epochs instead.

    Args:
        total: Number of epochs.
        comm: The communicator.
        quiet: Print nothing.
        initial: Epochs already done (resume).
    """

    def __init__(
        self, total: int, comm: Any, quiet: bool = False, initial: int = 0
    ) -> None:
        self.total = int(total)
        self.n = int(initial)
        self.enabled = _rank(comm) == 0 and not quiet
        self._bar = None
        self._every = max(1, self.total // 20)
        if self.enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(
                    total=self.total,
                    initial=self.n,
                    unit="epoch",
                    dynamic_ncols=True,
                    file=sys.stderr,
                )

    def update(self, loss: float, rmse: float) -> None:
        """Advance by one epoch and show the loss and the relative RMSE.

        Args:
            loss: The current loss.
            rmse: The current relative RMSE.
        """
        self.n += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix(
                {"loss": f"{loss:.3e}", "rel_rmse": f"{rmse:.3e}"}, refresh=False
            )
            self._bar.update(1)
        elif self.n % self._every == 0 or self.n == self.total:
            print(
                f"epoch {self.n}/{self.total}  loss {loss:.3e}  rel_rmse {rmse:.3e}",
                file=sys.stderr,
                flush=True,
            )

    def write(self, message: str) -> None:
        """Print a message on rank 0 without breaking the bar (nothing when quiet)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
