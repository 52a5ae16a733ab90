"""All SQL of the plugins service (schema `plugins`), one module per table group."""
