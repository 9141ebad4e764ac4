"""femnpde: finite-element neural-network PDE models with exact discrete adjoints."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("femnpde")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
