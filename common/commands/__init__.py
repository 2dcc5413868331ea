"""Plumbing for management commands: options looked up as rows (`lookups`), and a bounded
stop on SIGINT and SIGTERM (`stopping`)."""
