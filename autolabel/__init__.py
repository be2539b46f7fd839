"""autolabel package."""
