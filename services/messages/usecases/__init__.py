"""Use cases of the messages service: one async function per operation, each in one unit of work."""
