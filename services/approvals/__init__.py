"""approvals service: tool approvals."""
