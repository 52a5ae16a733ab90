"""Approvals use cases, one module per sub-domain; each operation runs in one unit of work."""
