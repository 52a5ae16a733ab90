"""Messages rules as plain values and functions, one module per sub-domain: conversations
(ownership, titles, history), messages (content, tool calls, what each state allows), the
recent list and its cursor, watch positions, memories and inbound dedupe. No I/O; time comes
in as `now` where needed. Every rule about an input value lives here."""
