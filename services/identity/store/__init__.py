"""All SQL of the identity service (schema `identity`), one module per table group."""
