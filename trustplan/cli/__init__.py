"""The typer shell: one small module per command; app.py maps errors to messages and exit codes."""
