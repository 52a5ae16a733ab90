"""All SQL of the todoist service (schema `todoist`), one module per table."""
