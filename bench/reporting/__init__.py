"""reporting stage of the bench pipeline."""
