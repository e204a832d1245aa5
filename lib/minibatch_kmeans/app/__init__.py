"""The application layer: YAML config, the job runners the jobs and notebooks call,
run-keyed outputs, logging set-up. Nothing in the library imports it."""
