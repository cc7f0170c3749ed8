"""Prometheus metrics of one gateway process, in a registry of its own (no module globals).

The :class:`GatewayMetrics` of a runtime is fed from three narrow places:

- ``decision_closed``: once per decision, when its closing write has committed (called by
  :class:`gateway.audit.writer.DecisionWriter`, or by the reconciler for a decision it closes
  as ``failed``). It counts the outcome and observes the stage timings the pipeline put in
  ``record["timings_ms"]``, the closing write's own duration (stage ``audit_write``) and the
  batch size of the generation (``record["batch"]["size"]``: images in its pipeline call).
- ``batch_written``: every transaction of the decision writer (audit append latency).
- ``watch``: callbacks read at scrape time, for the generation queue depth per model and the
  policy version in force.

Labels hold only bounded, non-personal values: outcomes (a fixed list), stage names (a fixed
list), model ids (from the registry in policy), the policy version. Never a tenant, a key or
a prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

# stages of gateway_stage_duration_seconds: record["timings_ms"] keys, then the closing write
TIMED_STAGES = ("licence", "prompt_classifier", "generator", "image_classifier", "provenance")
STAGES = (*TIMED_STAGES, "audit_write")
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_APPEND = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BATCH = (1, 2, 4, 8, 16, 32, 64)


class WaitingImages(Protocol):
    """Whatever queues generations: images waiting, per model id (models absent: none)."""

    def waiting_images(self) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class PolicyInForce:
    version_id: int
    sha256: str


class _Live(Collector):
    """Gauges read when scraped: queue depth per model, the policy version in force."""

    def __init__(self) -> None:
        self.models: Callable[[], Iterable[str]] = tuple
        self.waiting: WaitingImages | None = None
        self.policy: Callable[[], PolicyInForce] | None = None

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "gateway_generation_queue_depth",
            "Images waiting for the generator, per model",
            labels=["model"],
        )
        counts = {model: 0 for model in self.models()}
        if self.waiting is not None:
            counts.update(self.waiting.waiting_images())
        for model, n in sorted(counts.items()):
            depth.add_metric([model], n)
        yield depth
        version = GaugeMetricFamily(
            "gateway_policy_version",
            "Policy version in force (its id; the sha256 of its files as a label)",
            labels=["sha256"],
        )
        if self.policy is not None:
            current = self.policy()
            version.add_metric([current.sha256], current.version_id)
        yield version


class GatewayMetrics:
    """The metrics of one runtime; ``render`` answers a scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "gateway_decisions",
            "Decisions closed, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "gateway_stage_duration_seconds",
            "Time a request spent in each stage",
            ["stage"],
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "gateway_generation_batch_size",
            "Images in the generator call of each decision, per model",
            ["model"],
            buckets=_BATCH,
            registry=self.registry,
        )
        self.audit_append = Histogram(
            "gateway_audit_append_seconds",
            "Duration of each audit transaction (a group commit of decision writes)",
            buckets=_APPEND,
            registry=self.registry,
        )
        self._live = _Live()
        self.registry.register(self._live)

    def watch(
        self,
        *,
        models: Callable[[], Iterable[str]],
        waiting: WaitingImages,
        policy: Callable[[], PolicyInForce],
    ) -> None:
        """Set what is read at scrape time: registered models (shown at 0 when none wait),
        the queue, the policy in force. Called again to rewire (a new batcher)."""
        self._live.models, self._live.waiting, self._live.policy = models, waiting, policy

    def decision_closed(
        self, outcome: str, record: Mapping[str, Any], write_s: float | None = None
    ) -> None:
        """A decision's closing write committed: count it and observe its stages."""
        self.decisions.labels(outcome=outcome).inc()
        timings = record.get("timings_ms")
        if isinstance(timings, Mapping):
            for stage in TIMED_STAGES:
                ms = timings.get(stage)
                if isinstance(ms, int | float):
                    self.stage_seconds.labels(stage=stage).observe(ms / 1000)
            if "generator" in timings:
                model = record.get("model", {}).get("id")
                batch = record.get("batch")
                size = batch.get("size", 1) if isinstance(batch, Mapping) else 1
                if isinstance(model, str):
                    self.batch_size.labels(model=model).observe(size)
        if write_s is not None:
            self.stage_seconds.labels(stage="audit_write").observe(write_s)

    def batch_written(self, seconds: float) -> None:
        self.audit_append.observe(seconds)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape body and its content type (text format; OpenMetrics if asked)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
