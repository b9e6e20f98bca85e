"""`python -m reversalkit ...` (also what `torchrun -m reversalkit study ...` runs on every rank)."""

import sys

from reversalkit.cli import main

sys.exit(main())
