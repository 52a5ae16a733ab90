"""The Temporal worker: schedules for the cron jobs, the workflows and their activities."""
