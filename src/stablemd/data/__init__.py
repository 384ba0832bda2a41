"""Reference data: generation by oracle-driven MD, the frame database, imports, splits."""
