"""Helpers every Ferry app uses (leases, HTTP, API, admin and command plumbing).

Nothing here imports an app: `filesync` and `exports` depend on `common`, never the reverse.
"""
