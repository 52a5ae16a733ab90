"""plugins rules as plain values and functions (no I/O): manifests, definitions, diagnostics,
scopes, installs and policies."""
