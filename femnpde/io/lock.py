"""The lock of a run directory: one femnpde process writes a run directory at a time.

Two jobs writing the same run directory would interleave their checkpoints,
histories and fields silently.  :class:`RunLock` (a context manager,
collective) makes rank 0 create ``<dir>/.lock`` with ``os.open(O_CREAT |
O_EXCL)``, holding the holder's host, pid, process start marker, start time
and command, and gives every rank the outcome (an error is raised on every
rank: none waits).

* A lock held by a live process is refused: :class:`RunDirectoryLocked`
  (a ``ValueError``: exit code 2) names the directory, the holder and what
  to do.
* A lock whose process is gone on this host (the pid no longer runs, or runs
  another program: its start marker differs) is stale: it is taken over,
  with a warning on rank 0.  A lock of another host is never judged stale
  (its processes cannot be seen from here).
* The lock is released (rank 0 removes the file, if it is still its own) when
  the block ends: normally, on an exception (exit 2 or 3), on
  ``KeyboardInterrupt``; on SIGTERM outside the training loop (whose own
  handler stops at the end of an epoch with a checkpoint and raises) rank 0
  removes it and then ends as SIGTERM would have.  A process killed without a
  chance to clean up (SIGKILL) leaves a stale lock, taken over by the next run
  on the same host.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import shlex
import signal
import socket
import sys
import threading
import time
import uuid
from typing import Any

from femnpde._mpi import comm_rank, on_root, rank0_print

__all__ = ["LOCK_FILE", "RunDirectoryLocked", "RunLock"]

#: The lock's file name inside a run directory.
LOCK_FILE = ".lock"

_COMMAND_CHARS = 300  # longer commands are cut in the lock file (head kept)
_READ_RETRIES = 10  # a lock file read empty is re-read (its holder is writing it) this many times, 0.05 s apart


class RunDirectoryLocked(ValueError):
    """The run directory is in use by another process (exit code 2).

    Attributes:
        directory: The directory.
        holder: The lock file's content (host, pid, since, command), or None if unreadable.
    """

    def __init__(self, directory: pathlib.Path, holder: dict[str, Any] | None) -> None:
        self.directory = directory
        self.holder = holder
        lock = directory / LOCK_FILE
        if holder is None:
            who = f"its lock file {lock} cannot be read"
        else:
            who = (f"held by pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('since')} "
                   f"({holder.get('command')})")
        super().__init__(
            f"run directory {directory} is in use by another femnpde process: {who}; two processes writing one "
            f"run directory would mix their checkpoints and outputs: wait for that process to finish, or, if it "
            f"is gone (e.g. a job killed on another node), remove {lock} and run again"
        )

    def __reduce__(self) -> tuple:
        return type(self), (self.directory, self.holder)  # broadcast to the other ranks as itself


def _start_marker(pid: int) -> str | None:
    """What tells a process from a later one with the same pid: boot id and start time (Linux; else None)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        boot = pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3, starttime field 22
    return f"{boot}:{fields[19]}"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: kill(0) said it exists
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def _is_stale(holder: dict[str, Any]) -> bool:
    """Whether the lock's process is gone: this host, and the pid dead or another process now."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return True
    recorded, now = holder.get("start"), _start_marker(pid)
    return recorded is not None and now is not None and recorded != now


def _read(path: pathlib.Path) -> dict[str, Any] | None:
    """The lock file's content; None if it vanished; ``{}`` if it stays unreadable (not a lock of this version)."""
    for _ in range(_READ_RETRIES):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            data = json.loads(text)
            return data if isinstance(data, dict) else {}
        except json.JSONDecodeError:
            time.sleep(0.05)  # created, not yet written
    return {}


class RunLock:
    """The lock of a run directory, held for a ``with`` block (collective).

    Args:
        directory: The run directory (created with its parents if missing).
        comm: The communicator of the run (``None``: serial).

    Attributes:
        directory: The directory (absolute).
        taken_over: The content of the stale lock this run took over, or None
            (rank 0; None on the other ranks).

    Raises:
        RunDirectoryLocked: On every rank, when a live process holds the directory.
        ValueError: On every rank, when the directory cannot be created or is not a directory.
    """

    def __init__(self, directory: str | os.PathLike, comm: Any) -> None:
        self.directory = pathlib.Path(os.path.normpath(pathlib.Path(directory).expanduser().absolute()))
        self.comm = comm
        self.taken_over: dict[str, Any] | None = None
        self._content: dict[str, Any] | None = None

    @property
    def path(self) -> pathlib.Path:
        """The lock file."""
        return self.directory / LOCK_FILE

    def __enter__(self) -> RunLock:
        stale = on_root(self.comm, self._acquire, f"locking {self.directory}")
        if stale is not None:
            rank0_print(self.comm, f"femnpde: warning: taking over the stale lock {self.path} of pid {stale.get('pid')} "
                                   f"on this host ({stale.get('host')}, since {stale.get('since')}): that process "
                                   "is gone", file=sys.stderr)
        if comm_rank(self.comm) == 0:
            self.taken_over = stale
            _hold(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if comm_rank(self.comm) == 0:  # not collective: an error may have left the other ranks elsewhere
            _unhold(self)
            self.release()

    # -------------------------------------------------------------- rank 0
    def _acquire(self) -> dict[str, Any] | None:
        """Create the lock file (rank 0); returns the stale lock taken over, if any."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ValueError(f"{self.directory}: exists and is not a directory; give a new or empty directory") from None
        except OSError as err:
            raise ValueError(f"cannot use {self.directory} as a run directory ({err.strerror or err}); "
                             "choose a writable location") from None
        content = {
            "host": socket.gethostname(), "pid": os.getpid(), "start": _start_marker(os.getpid()),
            "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join(sys.argv)[:_COMMAND_CHARS], "token": uuid.uuid4().hex,
        }
        stale = None
        for _ in range(5):  # a lock that vanishes or is taken over meanwhile: look again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                if holder is None:
                    continue
                if not holder or not _is_stale(holder):
                    raise RunDirectoryLocked(self.directory, holder or None) from None
                if self._remove_stale(holder):
                    stale = holder
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(content) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self._content = content
            return stale
        raise RunDirectoryLocked(self.directory, _read(self.path) or None)

    def _remove_stale(self, holder: dict[str, Any]) -> bool:
        """Remove the stale lock ``holder`` unless another process replaced it meanwhile (then leave theirs)."""
        aside = self.directory / f"{LOCK_FILE}.stale-{os.getpid()}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        if _read(aside) != holder:  # not the file judged stale: another process's fresh lock, put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def release(self) -> None:
        """Remove the lock file if it is still this run's (rank 0; idempotent)."""
        if self._content is None:
            return
        if (_read(self.path) or {}).get("token") == self._content["token"]:
            self.path.unlink(missing_ok=True)
        self._content = None


#: The locks this process holds (rank 0), released all on SIGTERM.
_HELD: list[RunLock] = []
#: The SIGTERM handler before the first lock was taken (None: not installed).
_previous_sigterm: Any = None


def _hold(lock: RunLock) -> None:
    """Register a held lock; the first installs the SIGTERM handler (default action only, main thread)."""
    global _previous_sigterm
    _HELD.append(lock)
    if (len(_HELD) == 1 and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):  # else someone else decides what SIGTERM does
        _previous_sigterm = signal.signal(signal.SIGTERM, _release_all_and_terminate)


def _unhold(lock: RunLock) -> None:
    """Unregister a lock; the last restores the SIGTERM handler."""
    global _previous_sigterm
    if lock in _HELD:
        _HELD.remove(lock)
    if not _HELD and _previous_sigterm is not None:
        signal.signal(signal.SIGTERM, _previous_sigterm)
        _previous_sigterm = None


def _release_all_and_terminate(signum: int, frame: Any) -> None:
    """SIGTERM while locks are held (outside the training loop): remove them, then end as SIGTERM does."""
    for lock in reversed(_HELD):
        lock.release()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
