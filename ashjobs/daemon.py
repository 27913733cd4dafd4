"""`ashjobs run`: opens the store, rescues what the last run left executing, and runs the components.
(Being written: see the executor.)"""

from __future__ import annotations

# name → ("module:factory", config predicate). factory(svc) returns a component (see ashjobs.services).
COMPONENTS: dict[str, str] = {
    "executor": "ashjobs.executor:LocalExecutor",
    "cron": "ashjobs.cron_loop:CronLoop",
    "cluster": "ashjobs.cluster.node:ClusterNode",
    "metrics": "ashjobs.metrics:MetricsServer",
    "notify": "ashjobs.systemd:Notifier",
}
