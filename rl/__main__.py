"""`python -m rl` is the `relay` command."""

import sys

from rl.cli import main

sys.exit(main())
