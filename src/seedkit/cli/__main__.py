"""Allow ``python -m seedkit.cli``."""

import sys

from seedkit.cli import main

sys.exit(main())
