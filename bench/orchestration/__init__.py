"""orchestration stage of the bench pipeline."""
