"""`python -m node.ilsbridge.sim`: run the simulator until SIGINT/SIGTERM."""

import sys

from node.ilsbridge.sim.cli import main

sys.exit(main())
