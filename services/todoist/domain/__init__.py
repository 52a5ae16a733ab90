"""Todoist rules as plain values and functions, no I/O: the OAuth state and its TTL, the
authorize URL, token grants and profiles, task bodies and summaries, the one-segment task path,
token encryption."""
