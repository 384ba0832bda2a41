"""Batched molecular dynamics: many replicas in one state, integrators, force terms, runner."""
