"""Authentication and authorization shared by every service (ARCHITECTURE.md §5)."""
