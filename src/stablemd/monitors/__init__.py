"""What watches an MD run: criteria (which may freeze replicas) and observers (which record)."""
