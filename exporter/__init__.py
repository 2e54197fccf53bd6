"""Turns algorithm objects into served artifacts (SavedModels, checkpoints, manifests)."""
