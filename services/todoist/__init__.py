"""todoist service: users' Todoist connections (OAuth as a Temporal workflow, tokens encrypted at
rest) and the conversation-scoped task operations behind the agent's Todoist tools."""
