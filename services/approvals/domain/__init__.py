"""Tool-approval rules as plain values and functions, no I/O: the TTL, the effective status,
input checks. Ownership is the kit's one rule (`ResolvedUser.owns`)."""
