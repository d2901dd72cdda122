"""Running the command line in tests: in this process (fast, the default) or as a user would,
in a subprocess of its own."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from dataclasses import dataclass

from tests.conftest import REPO


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        import json

        return json.loads(self.stdout.strip().splitlines()[-1])


def cli(*args) -> Result:
    """``bchw ARGS`` through :func:`bchw.cli.main` in this process, output captured."""
    from bchw.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def bchw(*args, env=None) -> Result:
    """The real command in a subprocess (as a user would run it), everything captured."""
    done = subprocess.run(
        [sys.executable, "-m", "bchw", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    # The generic catch-all ("unexpected TypeError: ...") names no problem: never acceptable.
    assert not re.search(r"error: unexpected \w+:", lines[0]), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
