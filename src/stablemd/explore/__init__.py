"""Explore where a potential fails: the home of uncertainty-biased MD and active learning
(not built yet; see docs/architecture.md, "Where to add a method")."""
