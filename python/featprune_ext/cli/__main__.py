"""`python -m featprune_ext.cli ...` (what torchrun launches): the `featprune` command."""

import sys

from . import main

sys.exit(main())
