"""Object categories: the nuScenes detection classes, and the mappings from source taxonomies."""

from __future__ import annotations

from enum import Enum


class Category(str, Enum):
    """Detection classes (nuScenes detection benchmark names) plus ``OTHER`` for everything else."""

    CAR = "car"
    TRUCK = "truck"
    BUS = "bus"
    TRAILER = "trailer"
    CONSTRUCTION_VEHICLE = "construction_vehicle"
    PEDESTRIAN = "pedestrian"
    MOTORCYCLE = "motorcycle"
    BICYCLE = "bicycle"
    TRAFFIC_CONE = "traffic_cone"
    BARRIER = "barrier"
    OTHER = "other"


# nuScenes general category name -> detection class (as nuscenes.eval.detection.utils maps them).
NUSCENES_TO_CATEGORY: dict[str, Category] = {
    "vehicle.car": Category.CAR,
    "vehicle.truck": Category.TRUCK,
    "vehicle.bus.bendy": Category.BUS,
    "vehicle.bus.rigid": Category.BUS,
    "vehicle.trailer": Category.TRAILER,
    "vehicle.construction": Category.CONSTRUCTION_VEHICLE,
    "human.pedestrian.adult": Category.PEDESTRIAN,
    "human.pedestrian.child": Category.PEDESTRIAN,
    "human.pedestrian.construction_worker": Category.PEDESTRIAN,
    "human.pedestrian.police_officer": Category.PEDESTRIAN,
    "vehicle.motorcycle": Category.MOTORCYCLE,
    "vehicle.bicycle": Category.BICYCLE,
    "movable_object.trafficcone": Category.TRAFFIC_CONE,
    "movable_object.barrier": Category.BARRIER,
}

# Detection class -> the nuScenes general category written when a label has no source name.
CATEGORY_TO_NUSCENES: dict[Category, str] = {
    Category.CAR: "vehicle.car",
    Category.TRUCK: "vehicle.truck",
    Category.BUS: "vehicle.bus.rigid",
    Category.TRAILER: "vehicle.trailer",
    Category.CONSTRUCTION_VEHICLE: "vehicle.construction",
    Category.PEDESTRIAN: "human.pedestrian.adult",
    Category.MOTORCYCLE: "vehicle.motorcycle",
    Category.BICYCLE: "vehicle.bicycle",
    Category.TRAFFIC_CONE: "movable_object.trafficcone",
    Category.BARRIER: "movable_object.barrier",
    Category.OTHER: "movable_object.pushable_pullable",
}

# KITTI tracking/object type -> detection class. "DontCare" regions are not objects.
KITTI_TO_CATEGORY: dict[str, Category] = {
    "Car": Category.CAR,
    "Van": Category.CAR,
    "Truck": Category.TRUCK,
    "Tram": Category.BUS,
    "Pedestrian": Category.PEDESTRIAN,
    "Person_sitting": Category.PEDESTRIAN,
    "Person": Category.PEDESTRIAN,
    "Cyclist": Category.BICYCLE,
    "Misc": Category.OTHER,
}

CATEGORY_TO_KITTI: dict[Category, str] = {
    Category.CAR: "Car",
    Category.TRUCK: "Truck",
    Category.BUS: "Tram",
    Category.TRAILER: "Truck",
    Category.CONSTRUCTION_VEHICLE: "Truck",
    Category.PEDESTRIAN: "Pedestrian",
    Category.MOTORCYCLE: "Cyclist",
    Category.BICYCLE: "Cyclist",
    Category.TRAFFIC_CONE: "Misc",
    Category.BARRIER: "Misc",
    Category.OTHER: "Misc",
}


def category_from_nuscenes(name: str) -> Category:
    return NUSCENES_TO_CATEGORY.get(name, Category.OTHER)


def category_from_kitti(name: str) -> Category:
    return KITTI_TO_CATEGORY.get(name, Category.OTHER)
