"""The report's sections: one module per diagnostic, each a function returning a
:class:`~stablemd.diagnose.report.model.Section` from the diagnostic's result."""
