"""``python -m femnpde``: the command-line interface."""

import sys

from femnpde.cli import main

sys.exit(main())
