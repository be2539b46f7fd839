"""Label writers for nuScenes, KITTI (and later OpenLABEL)."""
