"""Databases: URLs, engines, side connections under deadlines, retries, reconnect."""
