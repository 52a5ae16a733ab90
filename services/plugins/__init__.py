"""plugins service: plugin definitions, installs, policies."""
