"""The ``stablemd`` command line."""
