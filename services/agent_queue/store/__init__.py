"""All SQL of the agent_queue service (schema `agent_queue`), one module per table group."""
