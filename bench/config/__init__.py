"""config stage of the bench pipeline."""
