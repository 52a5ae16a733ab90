"""identity rules as plain functions and values (no I/O): users and roles, contacts, phone verification."""
