"""The embedded delivery worker."""
