"""An OpenTelemetry SDK meter provider with an in-memory reader, installed as the global
meter provider for one test (the API allows setting it once; this resets that)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.util._once import Once

from keycard_agents._observe import _metrics


@contextmanager
def metric_reader() -> Iterator[InMemoryMetricReader]:
    """The SDK with an in-memory reader as the global meter provider, then the old one."""
    saved = metrics._internal._METER_PROVIDER
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[memory])
    install_meter_provider(provider)
    try:
        yield memory
    finally:
        provider.shutdown()
        install_meter_provider(saved)


def install_meter_provider(provider: Any) -> None:
    """Set the global meter provider and drop our instruments, so that the next recording
    makes them from this provider."""
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()
    metrics._internal._METER_PROVIDER = None
    if provider is not None:
        metrics.set_meter_provider(provider)
    _metrics._instruments = None
