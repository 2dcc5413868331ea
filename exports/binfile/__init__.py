"""The binfile codec: a pure module (no Django) that writes and reads format v1."""
