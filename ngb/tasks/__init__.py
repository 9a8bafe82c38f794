"""Scheduled tasks: their schedules, the scheduler that claims due runs, the one service that changes
tasks (used by the CLI, the API and the agent's tools alike) and the runs inside an agent's container."""
