"""`python -m featprune_ext.cli ...` (what torchrun launches): the `featprune` command."""

from . import console_main

console_main()
