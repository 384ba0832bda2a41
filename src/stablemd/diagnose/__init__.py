"""Diagnose a potential: held-out errors and the stability benchmark."""
