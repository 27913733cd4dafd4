"""Routing keys are checked where they enter: [node] config and enqueue."""

from __future__ import annotations

import pytest

from ashjobs import config
from ashjobs.client import build_job
from ashjobs.errors import ConfigError, UsageError


@pytest.mark.parametrize(("node", "message"), [
    ({"partition": ""}, "partition: expected a non-empty name"),
    ({"partition": " p1"}, "partition: expected a non-empty name"),
    ({"domains": ["site-a", ""]}, "domains: expected non-empty names"),
])
def test_a_blank_partition_or_domain_is_refused(tmp_path, node, message) -> None:
    # A poller with partition "" would have been taken for partition "default" by its scheduler.
    with pytest.raises(ConfigError, match=message):
        config.from_dict({"node": node}, data_dir=str(tmp_path))


def test_a_job_that_names_only_a_domain_is_routed_to_the_default_partition() -> None:
    job = build_job("noop", {}, domain="site-a", now=0.0)
    assert (job.partition, job.domain) == ("default", "site-a")  # not run on the scheduler itself
    assert build_job("noop", {}, now=0.0).partition is None


@pytest.mark.parametrize("opts", [{"partition": ""}, {"domain": ""}, {"partition": "p1 "}])
def test_a_blank_routing_key_is_refused_at_enqueue(opts) -> None:
    with pytest.raises(UsageError, match="expected a non-empty name"):
        build_job("noop", {}, now=0.0, **opts)
