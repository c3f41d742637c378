"""training stage of the bench pipeline."""
