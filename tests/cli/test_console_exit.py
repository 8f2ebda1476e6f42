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

    marker, code, thread, fast_exit = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "thread", sys.argv[4] == "fast"
    atexit.register(lambda: open(marker, "a").write("atexit ran\\n"))

    class Teardown:  # collected by the interpreter's teardown, which the fast exit skips
        def __init__(self, path, opener=open):  # globals may be gone by then: keep what __del__ needs
            self.path, self.opener = path, opener

        def __del__(self):
            self.opener(self.path, "a").write("teardown\\n")

    kept = Teardown(marker)

    def main():
        print("x" * 200_000)  # more than a pipe's buffer: lost unless flushed before the exit
        if thread:
            threading.Thread(target=lambda: (time.sleep(0.5), open(marker, "a").write("thread done\\n"))).start()
        return code

    cli.main = main
    cli.console_main(fast_exit=fast_exit)
""")


@pytest.mark.parametrize("code", [0, 2], ids=["ok", "usage-error"])
@pytest.mark.parametrize("thread,fast_exit", [(False, True), (True, True), (False, False)],
                         ids=["fast", "live-thread", "fast_exit=False"])
def test_console_main_exit_keeps_code_output_and_handlers(tmp_path, code, thread, fast_exit):
    marker = tmp_path / "marker.txt"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered stdout, as users run it
    proc = subprocess.run([sys.executable, "-c", CHILD, str(marker), str(code), "thread" if thread else "none",
                           "fast" if fast_exit else "normal"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "x" * 200_000 + "\n"
    lines = marker.read_text().splitlines()
    assert "atexit ran" in lines
    assert ("thread done" in lines) == thread  # the normal exit waited for the thread
    fast = not thread and fast_exit
    assert ("teardown" in lines) != fast  # the lever itself: no teardown on the fast path, only there
