"""Shared machinery under everything else: batches, neighbour lists, units, errors, files."""
