"""agent_queue service: agent jobs, agents, skills, scheduled tasks."""
