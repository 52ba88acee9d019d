"""Prometheus text exposition for ``GET /metrics``: request counts by route and status, batch
sizes, queue depth, request and batch latency histograms."""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Counter:
    def __init__(self, name: str, help: str, label: str):
        self.name, self.help, self.label = name, help, label
        self.values: dict[tuple[str, ...], float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, *labels: str, by: float = 1.0) -> None:
        with self._lock:
            self.values[labels] += by

    def render(self) -> list[str]:
        names = self.label.split(",")
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for labels, v in sorted(self.values.items()):
            tags = ",".join(f'{n}="{x}"' for n, x in zip(names, labels))
            out.append(f"{self.name}{{{tags}}} {v}")
        return out


class Gauge(Counter):
    def set(self, label: str, value: float) -> None:
        with self._lock:
            self.values[(label,)] = value

    def render(self) -> list[str]:
        return [line.replace(" counter", " gauge") if line.startswith("# TYPE") else line for line in super().render()]


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...]):
        self.name, self.help, self.buckets = name, help, buckets
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def observe(self, label: str, value: float) -> None:
        with self._lock:
            counts = self.counts.setdefault(label, [0] * (len(self.buckets) + 1))
            for i, b in enumerate(self.buckets):
                if value <= b:
                    counts[i] += 1
            counts[-1] += 1
            self.sums[label] += value

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for label, counts in sorted(self.counts.items()):
            for b, c in zip(self.buckets, counts):
                out.append(f'{self.name}_bucket{{model="{label}",le="{b}"}} {c}')
            out.append(f'{self.name}_bucket{{model="{label}",le="+Inf"}} {counts[-1]}')
            out.append(f'{self.name}_sum{{model="{label}"}} {self.sums[label]}')
            out.append(f'{self.name}_count{{model="{label}"}} {counts[-1]}')
        return out


class Metrics:
    def __init__(self) -> None:
        self.requests = Counter("music_serve_requests_total", "requests by route and status", "route,status")
        self.sequences = Counter("music_serve_sequences_total", "sequences scored", "model")
        self.truncated = Counter("music_serve_truncated_total", "sequences cut to fit the model's max_length "
                                 "(oldest turns dropped, or the front cut)", "model")
        self.first_turn_cut = Counter("music_serve_first_turn_cut_total", "conversations whose whole first "
                                      "exchange was dropped to fit max_length", "model")
        self.scorer_errors = Counter("music_serve_scorer_errors_total", "batches whose scoring failed", "model")
        self.queue_depth = Gauge("music_serve_queue_depth", "sequences waiting to be scored", "model")
        self.batch_size = Histogram("music_serve_batch_size", "sequences per scoring batch", SIZE_BUCKETS)
        self.batch_seconds = Histogram("music_serve_batch_seconds", "seconds per scoring batch", LATENCY_BUCKETS)
        self.request_seconds = Histogram("music_serve_request_seconds", "seconds per request, by route", LATENCY_BUCKETS)

    def render(self) -> str:
        parts: list[Counter | Histogram] = [self.requests, self.sequences, self.truncated, self.first_turn_cut,
                                            self.scorer_errors, self.queue_depth,
                                            self.batch_size, self.batch_seconds, self.request_seconds]
        return "\n".join(line for p in parts for line in p.render()) + "\n"
