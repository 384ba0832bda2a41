"""Explore where a potential fails: a calibrated ensemble-free uncertainty and MD biased
towards it (:mod:`stablemd.explore.uncertainty`; docs/uncertainty.md). Active learning comes
next."""
