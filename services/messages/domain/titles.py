"""Conversation titles: the default of a new web conversation and the auto-title a user
message gives it (docs/hardening.md #29).

Rule: while the title is absent, empty or exactly "New chat", a user message sets it to the
message content when that has at most 50 Unicode code points; otherwise to its first 50 code
points followed by "…". The cut never splits a user-perceived character: it moves back to the
previous grapheme-cluster boundary (a simplified UAX #29: combining and spacing marks,
variation selectors, emoji modifiers, zero-width joiner sequences, emoji tag sequences,
keycaps, regional-indicator flag pairs, Hangul jamo and CR LF stay whole). The original counted
UTF-16 units and could cut an emoji in half.
"""

from __future__ import annotations

import unicodedata

DEFAULT_TITLE = "New chat"  # what CreateConversation names an untitled conversation
TITLE_MAX_CHARS = 50
ELLIPSIS = "\u2026"

_ZWJ = "\u200d"


def _is_extender(ch: str) -> bool:
    """Joins the previous character into one cluster (never cut before it)."""
    cp = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Me", "Mc")  # marks, VS16, keycap U+20E3
        or ch == _ZWJ
        or 0x1F3FB <= cp <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequences (subdivision flags)
        or 0x1160 <= cp <= 0x11FF  # Hangul V/T jamo
        or 0xD7B0 <= cp <= 0xD7FF
    )


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _is_boundary(text: str, i: int) -> bool:
    """Whether a cut between text[i-1] and text[i] keeps every cluster whole."""
    if i <= 0 or i >= len(text):
        return True
    before, at = text[i - 1], text[i]
    if _is_extender(at) or before == _ZWJ or (before, at) == ("\r", "\n"):
        return False
    if _is_regional_indicator(before) and _is_regional_indicator(at):
        run = 0
        while i - 1 - run >= 0 and _is_regional_indicator(text[i - 1 - run]):
            run += 1
        return run % 2 == 0  # an odd run means `at` completes a flag
    return True


def title_from(content: str) -> str:
    if len(content) <= TITLE_MAX_CHARS:
        return content
    cut = TITLE_MAX_CHARS
    while cut > 0 and not _is_boundary(content, cut):
        cut -= 1
    if cut == 0:  # one cluster longer than the limit: keep it whole rather than nothing
        cut = TITLE_MAX_CHARS
        while not _is_boundary(content, cut):
            cut += 1
    return content[:cut] + ELLIPSIS


def auto_title(current: str | None, content: str) -> str | None:
    """The new title a user message gives the conversation, or None to leave it."""
    if current not in (None, "", DEFAULT_TITLE):
        return None
    return title_from(content)
