"""The task runtime behind an agent: running skills as A2A tasks, and where tasks are stored."""
