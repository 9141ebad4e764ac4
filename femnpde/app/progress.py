"""A progress bar over epochs on rank 0 (tqdm if installed, else a line every ~5 %).
"""

from __future__ import annotations

import sys
from typing import Any, Self

from femnpde._mpi import comm_rank

__all__ = ['Progress']


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
        self.enabled = comm_rank(comm) == 0 and not quiet
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
