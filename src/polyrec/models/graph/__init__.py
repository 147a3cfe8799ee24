"""Graph collaborative filtering: shared normalized adjacency and graph models."""
