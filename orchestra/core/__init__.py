"""The bottom layer: the data every other part speaks (requests, verdicts, decisions, results,
tiers, models, the catalog) and every error. Imports nothing else of Orchestra."""
