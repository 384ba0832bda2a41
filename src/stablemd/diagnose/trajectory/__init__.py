"""Observables of a trajectory written by ``stablemd simulate``, pooled over its replicas."""
