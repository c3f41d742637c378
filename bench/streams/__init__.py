"""streams stage of the bench pipeline."""
