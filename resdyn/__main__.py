"""`python -m resdyn ...` is the `resdyn` command."""

import sys

from resdyn.compute.cli import main

sys.exit(main())
