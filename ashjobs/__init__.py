"""ashjobs: a durable SQLite job scheduler for monitoring fleets on edge appliances.

The public Python API is small and imported lazily so that `ashjobs --version` stays fast:

    import ashjobs

    @ashjobs.task("ping_site", queue="checks", max_attempts=5, timeout="30s")
    async def ping_site(host: str) -> None: ...

    with ashjobs.connect(data_dir="/var/lib/ashjobs") as client:
        job = client.enqueue("ping_site", {"host": "10.0.0.1"})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ashjobs.client import Client, EnqueueResult, connect
    from ashjobs.tasks import task

__all__ = ["Client", "EnqueueResult", "__version__", "connect", "task"]


def __getattr__(name: str) -> Any:
    if name == "task":
        from ashjobs.tasks import task

        return task
    if name in ("connect", "Client", "EnqueueResult"):
        from ashjobs import client

        return getattr(client, name)
    raise AttributeError(f"module 'ashjobs' has no attribute {name!r}")
