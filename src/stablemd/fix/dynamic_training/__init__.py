"""Dynamic Training (Žugec, Juaristi & Alducin, J. Chem. Inf. Model. 2025): training on windows
of consecutive reference frames propagated by the model itself, with a growing window."""
