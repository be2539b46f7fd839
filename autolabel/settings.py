"""Settings from the environment (``AUTOLABEL_`` prefix) and the one place a torch device is chosen."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from calibration import InputError


class DeviceChoice(str, Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Settings(BaseSettings):
    """Process-wide settings.

    Attributes:
        home: workspace folder (database, zarr artifacts).
        device: compute device choice, resolved once by :func:`resolve_device`.
        shared_data: folder of the real sensor fixtures used by the demo and tests.
        database_url: SQLAlchemy URL; default a SQLite file in ``home``.
    """

    model_config = SettingsConfigDict(env_prefix="AUTOLABEL_", frozen=True)

    home: Path = Path(".autolabel")
    device: DeviceChoice = DeviceChoice.AUTO
    shared_data: Path = Path("../shared/data")
    database_url: str | None = None


def resolve_device(choice: DeviceChoice | str):  # -> torch.device
    """``auto`` -> CUDA when available else CPU; asking for CUDA without one is an error."""
    import torch

    choice = DeviceChoice(choice)
    if choice is DeviceChoice.CPU:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if choice is DeviceChoice.CUDA:
        raise InputError("device 'cuda' requested but torch sees no CUDA device (use --device auto or cpu)")
    return torch.device("cpu")
