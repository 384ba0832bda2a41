"""Energy-and-force training of potentials (the conventional objective every method starts from)."""
