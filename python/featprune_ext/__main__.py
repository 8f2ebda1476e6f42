"""`python -m featprune_ext ...`: the `featprune` command."""

import sys

from .cli import main

sys.exit(main())
