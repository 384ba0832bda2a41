"""Stability of potentials in MD: per-replica stable times summarised, plotted and tabulated."""
