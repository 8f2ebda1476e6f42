"""console_main skips the interpreter's teardown: the exit code, atexit handlers and buffered output
must survive that, and a live non-daemon thread must still be waited for."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# main() is replaced in the child, so these run in a second, not a minute
CHILD = textwrap.dedent("""
    import atexit, sys, threading, time
    from featprune_ext import cli

    marker, code, thread = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "thread"
    atexit.register(lambda: open(marker, "a").write("atexit ran\\n"))

    def main():
        print("x" * 200_000)  # more than a pipe's buffer: lost unless flushed before the exit
        if thread:
            threading.Thread(target=lambda: (time.sleep(0.5), open(marker, "a").write("thread done\\n"))).start()
        return code

    cli.main = main
    cli.console_main()
""")


@pytest.mark.parametrize("code", [0, 2], ids=["ok", "usage-error"])
@pytest.mark.parametrize("thread", [False, True], ids=["no-thread", "live-thread"])
def test_console_main_exit_keeps_code_output_and_handlers(tmp_path, code, thread):
    marker = tmp_path / "marker.txt"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as users run it
    proc = subprocess.run([sys.executable, "-c", CHILD, str(marker), str(code), "thread" if thread else "none"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "x" * 200_000 + "\n"
    lines = marker.read_text().splitlines()
    assert "atexit ran" in lines
    assert ("thread done" in lines) == thread  # the normal exit waited for the thread
