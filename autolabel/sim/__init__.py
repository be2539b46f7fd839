"""Deterministic driving-scene simulator writing genuine nuScenes v1.0 dataroots (``autolabel simulate``)."""
