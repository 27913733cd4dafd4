"""Shared by the notify tests: a real local HTTP receiver and a tiny job runner over the real store."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ashjobs import config, tasks
from ashjobs.clock import FakeClock
from ashjobs.services import Services
from ashjobs.store import Store, Writer, jobs
from ashjobs.tasks import Cancel, Discard, JobContext


class Receiver:
    """An HTTP server on 127.0.0.1:<free port> that answers each POST with the next scripted status."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "7")
                self.end_headers()
                self.wfile.write(b"thanks!" if status < 300 else b"broken!")

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?team=ops"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def services(tmp_path: Any, raw: dict[str, Any]) -> Services:
    cfg = config.from_dict(raw, data_dir=str(tmp_path))
    store = Store.from_config(cfg)
    return Services(cfg=cfg, store=store, writer=Writer(store), clock=FakeClock(), node="test",
                    log=logging.getLogger("ashjobs.test"))


def close(svc: Services) -> None:
    svc.writer.close()
    svc.store.close()


async def run_due(svc: Services, queue: str) -> dict[int, str]:
    """Run every due job of `queue` once through its task, as the executor would; returns new states."""
    now = svc.clock.now()
    with svc.store.tx() as conn:
        jobs.stage(conn, now)
        rows = jobs.claim(conn, queue, 100, svc.node, now, 60.0)
    for row in rows:
        t = tasks.get(row["task"])
        ctx = JobContext(job_id=row["id"], attempt=row["attempt"], max_attempts=row["max_attempts"],
                         task=row["task"], queue=row["queue"], node=svc.node, actor=row["actor"],
                         meta=json.loads(row["meta"]), services=svc)
        outcome, error = "success", None
        try:
            await t.fn(ctx, **json.loads(row["args"])) if t.context else await t.fn(**json.loads(row["args"]))
        except (Cancel, Discard) as e:
            outcome, error = "cancelled", str(e)
        except Exception as e:
            outcome, error = "failure", str(e)
        result = jobs.Result(row["id"], row["lease_token"], outcome, svc.node, now, 0.0, error,  # type: ignore[arg-type]
                             backoff=t.backoff(row["attempt"]) if t.backoff else None)
        with svc.store.tx() as conn:
            jobs.finish(conn, [result], svc.clock.now())
    return {r["id"]: jobs.get(svc.store.conn, r["id"]).state for r in rows}  # type: ignore[union-attr]
