"""The ``multiloss`` commands (the argument parser is the top-level ``multiloss_cli`` module)."""
