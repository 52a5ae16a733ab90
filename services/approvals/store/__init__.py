"""All SQL of the approvals service (schema `approvals`), one module per sub-domain."""
