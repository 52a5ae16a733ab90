"""All SQL of the delivery service (schema `delivery`), one module per table group."""
