"""Session-wide settings that keep the suite bounded on a busy machine (loaded with
`-p tests.support.pytest_plugin` from pyproject's addopts).

- Logs render plainly. Unconfigured, structlog prints exceptions with rich tracebacks and
  every frame's locals: on a loaded machine one logged database error took 13 s to render,
  and the servers run on the test's event loop, so every call in flight stalled with it.
- A backstop behind pytest-timeout. Its SIGALRM raises inside whatever runs at that moment:
  inside a background task the failure is swallowed as that task's result, and after it fires
  in a fixture teardown, pytest-asyncio cancels the remaining tasks with no timer left. So a
  hang could outlive the timeout. A test still running `BACKSTOP_GRACE_S` after its timeout
  gets every thread's stack printed, the child processes it left (PostgreSQL, Temporal,
  services) killed, and the run ended with exit status 1.
- Summary lines (the crash scenarios' tallies, the hostile-input runs' censuses) printed at the
  end of the run, also from pytest-xdist workers (`make test` runs two).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from collections.abc import Generator
from typing import Any

import psutil
import pytest
import structlog

from zenthor.logs import configure_logging

BACKSTOP_GRACE_S = 60.0


def pytest_configure(config: pytest.Config) -> None:
    configure_logging("INFO", "console")
    # Whatever sys.stderr is at the time of each line (pytest swaps it per test to capture it).
    structlog.configure(logger_factory=lambda *_args: structlog.PrintLogger(sys.stderr))


def _timeout_s(item: pytest.Item) -> float | None:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    value = item.config.getini("timeout")
    return float(value) if value else None


def _end_the_run(item: pytest.Item, after_s: float) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # what we print must reach the terminal, not a capture file
        capture.suspend_global_capture(in_=True)
    nodeid = item.nodeid
    sys.stderr.write(
        f"\n+++ {nodeid} still running {after_s:.0f} s after it started (pytest-timeout did not end it):"
        " stacks below, children killed, run ended +++\n"
    )
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass
    sys.stderr.write(f"killed {len(children)} child process(es)\n")
    sys.stderr.flush()
    os._exit(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    timeout = _timeout_s(item)
    if not timeout:
        yield
        return
    after_s = timeout + BACKSTOP_GRACE_S
    backstop = threading.Timer(after_s, _end_the_run, (item, after_s))
    backstop.daemon = True
    backstop.name = f"hang backstop {item.nodeid}"
    backstop.start()
    try:
        yield
    finally:
        backstop.cancel()


# Lines for the end-of-run summary, by section. A pytest-xdist worker's terminal is nobody's, so
# a worker sends its lines to the controller, which prints them.
_SUMMARY = pytest.StashKey[dict[str, list[str]]]()
_WORKER_OUTPUT_KEY = "summary_lines"


def add_summary_line(config: pytest.Config, section: str, line: str) -> None:
    """`line` printed under `section` at the end of the run, passing or not, with or without
    pytest-xdist."""
    worker_output = getattr(config, "workeroutput", None)
    sections = worker_output.setdefault(_WORKER_OUTPUT_KEY, {}) if worker_output is not None else config.stash.setdefault(_SUMMARY, {})
    sections.setdefault(section, []).append(line)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist: a worker ended; keep the summary lines it sent."""
    summary = node.config.stash.setdefault(_SUMMARY, {})
    for section, lines in getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT_KEY, {}).items():
        summary.setdefault(section, []).extend(lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for section, lines in config.stash.get(_SUMMARY, {}).items():
        terminalreporter.section(section)
        for line in lines:
            terminalreporter.write_line(line)
