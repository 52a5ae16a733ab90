"""agent_queue rules as plain functions and values (no I/O): jobs, agents, skills, tasks."""
