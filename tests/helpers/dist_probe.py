"""`featprune ...` with a probe: records which calibration batches this process's statistics
pass sees for each block, and every all-reduce of the statistics (each tensor before and after),
then runs the CLI unchanged. The distributed tests launch it with torchrun in place of
`-m featprune_ext.cli`, so each rank's batch share and the SUM/MAX reductions can be checked.

    FEATPRUNE_PROBE_DIR=DIR python dist_probe.py prune MODEL --out OUT ...   # writes DIR/rank{RANK}.json:
    {"batches": [[ids of each batch] per block], "reductions": [{"sums": [[before, after], ...],
                                                                 "maxima": [[before, after], ...]}]}
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path


def main() -> int:
    from featprune_ext import cli
    from featprune_ext.engine import block_statistics as stats_pass
    from featprune_ext.engine.distributed import DistContext

    probe = Path(os.environ["FEATPRUNE_PROBE_DIR"])
    rank = int(os.environ.get("RANK", "0"))
    seen: list = []  # per block: the token ids of every batch the statistics pass ran
    real = stats_pass.collect_stats
    signature = inspect.signature(real)

    def spy(*args, **kwargs):
        seen.append([b.ids.tolist() for b in signature.bind(*args, **kwargs).arguments["batches"]])
        return real(*args, **kwargs)

    reductions: list = []
    real_reduce = DistContext.all_reduce_

    def reduce_spy(self, sums, maxima):
        before = ([t.tolist() for t in sums], [t.tolist() for t in maxima])
        real_reduce(self, sums, maxima)
        if self.enabled:
            reductions.append({"sums": [[b, t.tolist()] for b, t in zip(before[0], sums)],
                               "maxima": [[b, t.tolist()] for b, t in zip(before[1], maxima)]})

    stats_pass.collect_stats = spy
    DistContext.all_reduce_ = reduce_spy
    try:
        return cli.main(sys.argv[1:])
    finally:
        probe.mkdir(parents=True, exist_ok=True)
        (probe / f"rank{rank}.json").write_text(json.dumps({"batches": seen, "reductions": reductions}))


if __name__ == "__main__":
    sys.exit(main())
