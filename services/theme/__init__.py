"""The theme stage: insights grouped into named themes per job, as they stream in."""
