"""The complexity agent: a learned scorer of how hard a prompt is, and its retraining."""
