"""The per-epoch CSV training history (written by rank 0, flushed row by row).
"""

from __future__ import annotations

import csv
import numbers
import os
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np

from femnpde._mpi import comm_rank, on_root
from femnpde.io.files import atomic_write

__all__ = ['HISTORY_COLUMNS', 'History']


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
                atomic_write(
                    self.path, lambda f: f.write(self._header_text()), binary=False
                )
            except OSError as exc:
                raise ValueError(
                    f"History: cannot write '{self.path}' ({exc})"
                ) from exc

        on_root(comm, init, "History", broadcast=False)

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
        if comm_rank(self.comm) != 0:
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
        on_root(
            self.comm,
            lambda: self._rewrite(lambda rows: [r for r in rows if not (r[i] != "" and float(r[i]) > epoch)]),
            "History.truncate_after",
            broadcast=False,
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

        atomic_write(self.path, write, binary=False)

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
