"""Files of a run directory: atomic writes and :class:`RunDirectory` (rank 0 writes; collective).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any

from femnpde._mpi import on_root

__all__ = ['RunDirectory', 'atomic_write']


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


def atomic_write(
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
        on_root(comm, self._check_writable, "RunDirectory", broadcast=False)
        if comm is not None:
            comm.barrier()

    def _check_writable(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.path, prefix=".write-test.")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ValueError(
                f"RunDirectory: cannot use '{self.path}' as the output directory "
                f"({exc.strerror or exc}); choose a writable location"
            ) from None

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
        on_root(
            self.comm,
            lambda: atomic_write(target, lambda f: f.write(text), binary=False),
            f"RunDirectory.write_text({name!r})",
            broadcast=False,
        )
