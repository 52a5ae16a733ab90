"""todoist service: Todoist OAuth and tasks."""
