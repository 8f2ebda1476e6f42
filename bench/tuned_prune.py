"""`featprune prune` with engine levers set: the benchmark driver behind bench_engine.py --tuning.

    python bench/tuned_prune.py FIELD=VALUE [FIELD=VALUE ...] -- prune MODEL --out OUT ...

FIELD is a field of featprune_ext.engine.tuning.Tuning (fork, early_shard, stats_early_stop,
background_nice), or fast_exit (cli.console_main's). The levers change speed, never a mask; they are
not options of `featprune prune`, so benchmarks pass them through the API, as here.
"""

from __future__ import annotations

import dataclasses
import sys


def parse_levers(specs: list[str]) -> tuple[dict, bool]:
    from featprune_ext.engine.tuning import Tuning

    fields = {f.name: f.type for f in dataclasses.fields(Tuning)}
    levers, fast_exit = {}, True
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or (name not in fields and name != "fast_exit"):
            raise SystemExit(f"tuned_prune: {spec!r} is not FIELD=VALUE with FIELD one of "
                             f"{', '.join([*fields, 'fast_exit'])}")
        parsed = value.lower() in ("1", "true", "yes", "on") if name != "background_nice" else int(value)
        if name == "fast_exit":
            fast_exit = parsed
        else:
            levers[name] = parsed
    return levers, fast_exit


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        raise SystemExit(__doc__)
    split = argv.index("--")
    levers, fast_exit = parse_levers(argv[:split])
    from featprune_ext import cli
    from featprune_ext.cli import prune as prune_cli
    from featprune_ext.engine.tuning import Tuning

    tuning = Tuning(**levers)
    command = argv[split + 1:]
    if command[:1] != ["prune"]:
        raise SystemExit("tuned_prune: the command after -- must be `prune ...`")

    def main_with_levers(args=None) -> int:
        parsed = cli.build_parser().parse_args(command)
        parsed.func = lambda a: prune_cli.run(a, tuning=tuning)
        return cli.run_parsed(parsed)

    cli.main = main_with_levers
    cli.console_main(fast_exit=fast_exit)


if __name__ == "__main__":
    main()
