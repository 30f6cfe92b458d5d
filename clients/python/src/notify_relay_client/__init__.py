"""Python client of notify-relay."""
