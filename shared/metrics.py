"""The Prometheus metrics of the suite's domain, declared once (docs/operations.md explains each).

Every process (an API or a worker) exposes these on its `/metrics` beside its own HTTP metrics,
so an operator sees, per instance: consumer lag, the outbox backlog and its oldest age, what the
idempotent consumers did, dead letters by reason, delivery latency per channel, SLA breaches and
login outcomes. The alert rules and the dashboard under `deploy/` use these names; a test checks
that every name they use is exposed.

Labels are low-cardinality on purpose: a topic, a consumer, a channel, a reason *kind* — never
an id, an address or a CVR.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    platform_collector,
    process_collector,
)

# One registry per process for the domain metrics (the HTTP metrics are per app).
REGISTRY = CollectorRegistry()
process_collector.ProcessCollector(registry=REGISTRY)  # RSS, open file descriptors, CPU
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

# --- messaging ---------------------------------------------------------------------------------

CONSUMER_LAG = Gauge(
    "adgang_consumer_lag_messages",
    "Messages on a partition not yet processed by this consumer (high watermark - position)",
    ["consumer", "topic", "partition"],
    registry=REGISTRY,
)
CONSUMED = Counter(
    "adgang_consumed_messages_total",
    "Messages the idempotent consumer took, by outcome: handled, duplicate, ignored, dead-lettered",
    ["consumer", "outcome"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "adgang_dead_letters_total",
    "Messages sent to <topic>.dlq, by reason kind (invalid-json, unknown-type, invalid-payload, "
    "missing-header, oversized, handler-failed, ...)",
    ["topic", "consumer", "reason"],
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge(
    "adgang_outbox_backlog_events",
    "Outbox rows not yet published",
    ["service"],
    registry=REGISTRY,
)
OUTBOX_OLDEST_AGE = Gauge(
    "adgang_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row (0 when the outbox is empty)",
    ["service"],
    registry=REGISTRY,
)
OUTBOX_PUBLISHED = Counter(
    "adgang_outbox_published_total",
    "Outbox rows published to the broker",
    ["service"],
    registry=REGISTRY,
)

# --- deliveries (notifier) -----------------------------------------------------------------------

DELIVERY_LATENCY = Histogram(
    "adgang_delivery_latency_seconds",
    "From the event that asked for a delivery to its acceptance by the channel",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 7200),
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "adgang_deliveries_total",
    "Delivery attempts by channel and outcome: delivered, retry, failed",
    ["channel", "outcome"],
    registry=REGISTRY,
)
SLA_BREACHES = Counter(
    "adgang_sla_breaches_total",
    "Deliveries that missed their promised time (S2: credentials letter within 2 hours)",
    ["kind"],
    registry=REGISTRY,
)

# --- identity ------------------------------------------------------------------------------------

LOGINS = Counter(
    "adgang_logins_total",
    "Login steps by outcome: success, failure, lockout",
    ["step", "outcome"],
    registry=REGISTRY,
)

# --- limits --------------------------------------------------------------------------------------

RATE_LIMITED = Counter(
    "adgang_rate_limited_total",
    "Requests refused by a rate limit",
    ["limit"],
    registry=REGISTRY,
)
