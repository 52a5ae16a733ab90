"""All SQL of the messages service (schema `messages`), one module per sub-domain."""
