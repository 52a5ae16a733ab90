"""identity use cases: one async function per operation, each in one unit of work."""
