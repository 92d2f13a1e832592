import sys

from resdyn.compute.cli import main

sys.exit(main())
