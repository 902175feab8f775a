"""What the service counts for Prometheus (`GET /metrics`): requests by endpoint and status,
their latency, the sizes of the encoder's batches, and the collection's size.

Each app has its own registry, so two services in one process (tests) count apart. The
workers of `shopsearch serve --workers` count together: prometheus_client's multi-process
mode (`PROMETHEUS_MULTIPROC_DIR`, which the supervisor sets) keeps each worker's values in
files there, and any worker's page sums them."""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    def __init__(self, products: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shopsearch_requests",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shopsearch_request_seconds",
            "Time to answer a request, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch = Histogram(
            "shopsearch_encoder_batch_size",
            "Queries encoded together in one encoder call.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.count_products = products
        self.shared = bool(os.environ.get(MULTIPROCESS))
        self.products = Gauge(
            "shopsearch_collection_products",
            "Products in the collection.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        if not self.shared:
            self.products.set_function(products)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def text(self) -> bytes:
        if not self.shared:
            return generate_latest(self.registry)
        self.products.set(self.count_products())
        every_worker = CollectorRegistry()
        MultiProcessCollector(every_worker)
        return generate_latest(every_worker)
