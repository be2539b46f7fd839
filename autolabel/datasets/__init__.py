"""Clip readers: every source becomes one typed model (``autolabel.datasets.model``)."""
