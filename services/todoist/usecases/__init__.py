"""todoist use cases: one async function per operation. Each holds a transaction only around
its own rows; every Todoist or Temporal call happens between transactions, never inside one
(docs/hardening.md #7)."""
