"""Builders for Exo2Ego's data: Ego-ExoClip, EgoIT, EgoBench, EgoClip and the synthetic Ego-Exo world."""
