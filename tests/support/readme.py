"""The README's fenced shell blocks, read as the tests that prove them read them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# The curl session's first line; the tests point it at their own stack.
SESSION_GATEWAY_LINE = "GW=http://127.0.0.1:8080"


def shell_blocks() -> list[str]:
    return [body for language, body in _FENCE.findall(README.read_text()) if language == "sh"]


def session_block() -> str:
    """The curl session (README, "Sign in and call the API")."""
    [block] = [b for b in shell_blocks() if b.startswith(SESSION_GATEWAY_LINE + "\n")]
    return block


def commands(block: str) -> list[str]:
    """Each command of a block, without its trailing comment; comment lines and blanks left out."""
    found: list[str] = []
    for line in block.splitlines():
        command = re.sub(r"\s+#.*$", "", line).strip()
        if command and not command.startswith("#"):
            found.append(command)
    return found
