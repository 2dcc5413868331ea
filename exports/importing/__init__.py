"""Importing: a binfile back into a project, whole or not at all, under the job kernel."""
