"""prefloop_client: a Python client for a Prefloop server's REST API (needs only httpx).

    >>> from prefloop_client import Client
    >>> Client("http://127.0.0.1:8000", token="pfl_x").base_url
    'http://127.0.0.1:8000/api/v1/'
"""

from .client import BulkResult, Client, Export, Upload
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    JobFailed,
    NotFound,
    PrefloopError,
    RateLimited,
    ServerError,
    Unauthorized,
)

__all__ = [
    "BadRequest", "BulkResult", "Client", "Conflict", "Export", "Forbidden", "JobFailed", "NotFound", "PrefloopError",
    "RateLimited", "ServerError", "Unauthorized", "Upload",
]
__version__ = "0.1.0"
