"""`ashjobs run`: take the data dir's lock, open and migrate the store, rescue what this node's last run
left executing, then run the components this node's roles need until SIGTERM/SIGINT, and drain."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
from typing import Any

from ashjobs import presence, tasks
from ashjobs.clock import SYSTEM, Clock
from ashjobs.config import Config
from ashjobs.services import Services

# name → "module:Class". Each is built as Class(svc) when `wanted` says this node needs it.
COMPONENTS: dict[str, str] = {
    "executor": "ashjobs.executor:LocalExecutor",
    "pruner": "ashjobs.pruner:Pruner",
    "cron": "ashjobs.cron_loop:CronLoop",
    "cluster": "ashjobs.cluster.node:ClusterNode",
    "metrics": "ashjobs.metrics:MetricsServer",
    "notify": "ashjobs.systemd:Notifier",
}


def wanted(name: str, cfg: Config) -> bool:
    roles = cfg.node.roles
    if name in ("executor", "cron", "pruner"):
        return "scheduler" in roles
    if name == "metrics":
        return bool(getattr(cfg.section("metrics"), "listen", "")) if "metrics" in _known_sections() else False
    if name == "notify":
        return bool(os.environ.get("NOTIFY_SOCKET"))
    return True


def _known_sections() -> set[str]:
    from ashjobs.config import SECTIONS, _available

    return {k for k, ref in SECTIONS.items() if _available(ref)}


def _build(name: str, svc: Services) -> Any | None:
    module, _, attr = COMPONENTS[name].partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):  # not part of this copy
            return None
        raise
    return getattr(mod, attr)(svc)


def run(cfg: Config, *, clock: Clock = SYSTEM) -> int:
    from ashjobs.store import Store, Writer
    from ashjobs.store import jobs as sql

    log = logging.getLogger("ashjobs")
    lock = presence.DaemonLock(cfg.data_dir)
    lock.acquire()
    try:
        store = Store.from_config(cfg)
        tasks.load(cfg)
        if "scheduler" in cfg.node.roles:
            from ashjobs import cron

            cron.check(cfg)  # a cron entry naming an unknown task is refused now, not at its first slot
        node = cfg.node.name
        with store.tx() as conn:
            rescued = sql.rescue(conn, clock.now(), owner=node, reason=f"{node} restarted while the job ran",
                                 on_finish=tasks.run_finish_hooks)
        if rescued:
            log.warning("rescued %d job(s) left executing by this node's previous run", len(rescued))
        writer = Writer(store)
        try:
            return asyncio.run(_main(cfg, store, writer, clock, log))
        finally:
            writer.close()
            store.close()
    finally:
        lock.release()


async def _main(cfg: Config, store: Any, writer: Any, clock: Clock, log: logging.Logger) -> int:
    svc = Services(cfg=cfg, store=store, writer=writer, clock=clock, node=cfg.node.name, log=log)
    ready = asyncio.Event()
    svc.extras["ready"] = ready
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, svc.stopping.set)

    wake_sock = presence.listen_wake(cfg.data_dir)

    def on_datagram() -> None:
        with contextlib.suppress(OSError):
            while wake_sock.recv(64):
                pass
        executor = svc.extras.get("executor")
        if executor is not None:
            executor.wake(external=True)
        svc.wake()

    loop.add_reader(wake_sock.fileno(), on_datagram)

    components: dict[str, Any] = {}
    for name in COMPONENTS:
        if wanted(name, cfg):
            comp = _build(name, svc)
            if comp is not None:
                components[name] = comp
    runners = {name: asyncio.create_task(comp.run(), name=name) for name, comp in components.items()}
    log.info("ashjobs serving: node %s, roles %s, data %s, components %s", svc.node, ",".join(cfg.node.roles),
             cfg.db_path, ",".join(components))
    ready.set()

    stop = asyncio.create_task(svc.stopping.wait())
    done, _ = await asyncio.wait([stop, *runners.values()], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for name, task in runners.items():
        if task in done and not task.cancelled() and task.exception() is not None:
            log.error("component %s failed: %r", name, task.exception(), exc_info=task.exception())
            code = 1
    svc.stopping.set()
    log.info("stopping: draining for up to %gs", cfg.node.grace_period)
    drains = [comp.drain(cfg.node.grace_period) for comp in components.values() if hasattr(comp, "drain")]
    results = await asyncio.gather(*drains, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            log.error("drain failed: %r", r)
    for task in runners.values():
        task.cancel()
    await asyncio.gather(*runners.values(), return_exceptions=True)
    loop.remove_reader(wake_sock.fileno())
    wake_sock.close()
    log.info("stopped")
    return code
