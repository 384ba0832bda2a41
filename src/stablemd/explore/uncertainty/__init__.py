"""Calibrated ensemble-free uncertainty of any potential, and uncertainty-biased MD
(docs/uncertainty.md): gradient features (``features``), the GP posterior (``posterior``),
calibration (``calibration``), the fitted uncertainty kept with the model (``estimator``,
``fit``, ``workflow``), its evaluation (``evaluation``), the ensemble baseline (``ensemble``)
and the biased force term and stop (``bias``)."""
