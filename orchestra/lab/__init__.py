"""Policy experiments: replay of recorded history, scripted scenarios in simulated time."""
