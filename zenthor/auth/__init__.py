"""Authentication and authorization shared by every service (docs/architecture.md §4)."""
