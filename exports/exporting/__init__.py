"""Exporting: files into a binfile, a part at a time, under the job kernel."""
