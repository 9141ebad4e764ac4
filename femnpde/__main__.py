"""``python -m femnpde``: the command-line interface."""

import sys

from femnpde.app.cli import main

sys.exit(main())
