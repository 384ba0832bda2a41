"""Observables of structures and trajectories: geometry, h(r) and RDFs, dynamics, reweighting."""
