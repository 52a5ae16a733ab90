"""Programs that use the backend only through its public contracts, written to be copied."""
