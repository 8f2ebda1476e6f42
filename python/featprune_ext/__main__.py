"""`python -m featprune_ext ...`: the `featprune` command."""

from .cli import console_main

console_main()
