"""What the service counts for Prometheus (`GET /metrics`): requests by endpoint and status,
their latency, the sizes of the encoder's batches, and the collection's size.

Each app has its own registry, so two services in one process (tests) count apart."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
        self.products = Gauge(
            "shopsearch_collection_products",
            "Products in the collection.",
            registry=self.registry,
        )
        self.products.set_function(products)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
