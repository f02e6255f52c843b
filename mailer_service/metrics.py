"""The mailer's own Prometheus metrics (the HTTP ones come from common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

MAILS = Counter("mailer_emails_total", "Emails by outcome", ["outcome"])
# With several workers (common/metrics.py): the latest value, from whichever holds the partition.
LAG = Gauge(
    "mailer_consumer_lag",
    "Records behind the partition's end",
    ["topic", "partition"],
    multiprocess_mode="livemostrecent",
)
