"""The [apps] section: each built-in app can be turned off, and tuned.

    [apps.alerts]
    enabled = true
    escalate_after = "30m"   # a pending critical/emergency alert older than this is escalated

    [apps.packages]
    enabled = true

    [apps.trace_summaries]
    enabled = true
    retention = "3d"

    [apps.notifications]
    enabled = true
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ashjobs.config import Duration

ESCALATE_AFTER = Duration(1800.0)
TRACE_RETENTION = Duration(3 * 86400.0)


@dataclass
class AlertsApp:
    enabled: bool = True
    escalate_after: Duration = ESCALATE_AFTER

    def validate(self) -> str | None:
        return "escalate_after: must be > 0" if self.escalate_after <= 0 else None


@dataclass
class PackagesApp:
    enabled: bool = True


@dataclass
class TraceSummariesApp:
    enabled: bool = True
    retention: Duration = TRACE_RETENTION

    def validate(self) -> str | None:
        return "retention: must be > 0" if self.retention <= 0 else None


@dataclass
class NotificationsApp:
    enabled: bool = True


@dataclass
class AppsConfig:
    alerts: AlertsApp = field(default_factory=AlertsApp)
    packages: PackagesApp = field(default_factory=PackagesApp)
    trace_summaries: TraceSummariesApp = field(default_factory=TraceSummariesApp)
    notifications: NotificationsApp = field(default_factory=NotificationsApp)
