"""A run's peak RSS (progress bar, per-layer and overall report) is its own: memory the process used
before the prune (the demo builds its model in memory first) is not counted."""

import json
import re
import subprocess
import sys

import pytest

from featprune_ext.engine.report import reset_peak_rss

GIB = 2**30

SCRIPT = """
import json, sys
from featprune_ext.engine.report import peak_rss_bytes
big = bytearray(b"\\x01") * (1 << 30)  # 1 GiB, every page touched, freed before the prune
before = peak_rss_bytes()
del big
import featprune_ext as fp
report = fp.prune(sys.argv[1], sys.argv[2], calib_texts=sys.argv[3], nsamples=6, seqlen=16, sparsity=0.5)
print(json.dumps({"before": before, "run": report["peak_rss_bytes"],
                  "layers": [r["peak_rss_bytes"] for r in report["layers"]]}))
"""


def test_reset_peak_rss_in_a_fresh_process():
    code = ("from featprune_ext.engine.report import peak_rss_bytes, reset_peak_rss\n"
            "big = bytearray(b'\\x01') * (512 << 20); high = peak_rss_bytes(); del big\n"
            "ok = reset_peak_rss(); print(ok, high, peak_rss_bytes())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ok, high, after = proc.stdout.split()
    if ok != "True":
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    assert int(high) > 512 << 20 and int(after) < int(high) - (400 << 20)


@pytest.mark.skipif(not reset_peak_rss(), reason="no /proc/self/clear_refs: the peak is the process's lifetime")
def test_prune_reports_its_own_peak(tiny_model, calib_jsonl, tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_model("llama")), str(tmp_path / "out"),
                           str(calib_jsonl)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["before"] > GIB
    ceiling = got["before"] - GIB // 2  # a tiny model's prune needs far less than the GiB freed before it
    assert got["run"] < ceiling and all(peak < ceiling for peak in got["layers"])
    shown = [float(x) * GIB for x in re.findall(r"peak_rss=([0-9.]+)G", proc.stderr)]  # the progress bar
    assert shown and all(peak < ceiling for peak in shown)
