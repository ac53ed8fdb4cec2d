"""The console's screens: fleet, node, trust, confirm, help and the command palette's commands."""
