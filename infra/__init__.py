"""Configuration, artifact stores, logging and errors: the ground every other package stands on."""

from infra.errors import (
    ConfigError,
    IntegrityError,
    InvalidRequest,
    KnflowError,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from infra.logs import bound_runid, configure_logging
from infra.settings import BrokerLocation, Settings, StoreLocation, load_settings
from infra.store import ArtifactStore, ObjectInfo, open_store, validate_key

__all__ = [
    "ArtifactStore",
    "BrokerLocation",
    "ConfigError",
    "IntegrityError",
    "InvalidRequest",
    "KnflowError",
    "NotFound",
    "ObjectInfo",
    "PayloadTooLarge",
    "Settings",
    "StoreLocation",
    "Unavailable",
    "bound_runid",
    "configure_logging",
    "load_settings",
    "open_store",
    "validate_key",
]
