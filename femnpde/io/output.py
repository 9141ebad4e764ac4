"""Run-directory outputs, in one import (a facade over their modules).

* :mod:`femnpde.io.files` -- :class:`RunDirectory`, atomic writes;
* :mod:`femnpde.io.history` -- :class:`History` (CSV);
* :mod:`femnpde.io.checkpoint` -- :func:`save_checkpoint` / :func:`load_checkpoint`;
* :mod:`femnpde.io.fields` -- :func:`write_fields` (VTX / XDMF);
* :mod:`femnpde.io.gather` -- :func:`gather_owned`;
* :mod:`femnpde.io.plots` -- :func:`plot_history`, :func:`plot_comparison`, :func:`plot_width_study`;
* :mod:`femnpde.app.progress` -- :class:`Progress`; :func:`femnpde._mpi.rank0_print`.
"""

from femnpde._mpi import rank0_print
from femnpde.app.progress import Progress
from femnpde.io.checkpoint import load_checkpoint, save_checkpoint
from femnpde.io.fields import write_fields
from femnpde.io.files import RunDirectory
from femnpde.io.gather import gather_owned
from femnpde.io.history import HISTORY_COLUMNS, History
from femnpde.io.plots import plot_comparison, plot_history, plot_width_study

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
