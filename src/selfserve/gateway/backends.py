"""The backend pool: upstreams, their health (eject/readmit) and their scraped engine metrics.

Two background loops keep this soft state fresh: a health probe every `health.interval_s`
(ejecting a backend after `eject_after_failures` failed probes or failed requests in a row,
readmitting it after `readmit_after_successes` good probes) and a metrics scrape every
`scrape_interval_s`. The `Router` reads `healthy` and `metrics` as plain lists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from selfserve.gateway.config import GatewayConfig
from selfserve.gateway.engine_scrape import MetricsParseError, parse_engine_metrics
from selfserve.gateway.upstream import Upstream, UpstreamUnavailable
from selfserve.policy.snapshot import EngineMetrics

log = logging.getLogger("selfserve.gateway")


@dataclass(slots=True)
class HealthState:
    is_up: bool = True
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_error: str = ""


class BackendPool:
    """All backends of one gateway; indexes match the `Router`'s replica indexes."""

    def __init__(
        self, config: GatewayConfig, *, on_health_change: Callable[[int, bool], None] | None = None
    ) -> None:
        self.config = config
        self.upstreams = [
            Upstream(
                i,
                b,
                connect_timeout_s=config.limits.connect_timeout_s,
                max_connections=config.limits.max_connections_per_backend,
                read_timeout_s=config.limits.first_byte_timeout_s,
            )
            for i, b in enumerate(config.backends)
        ]
        self.health = [HealthState() for _ in self.upstreams]
        self.healthy: list[bool] = [True] * len(self.upstreams)
        self.metrics: list[EngineMetrics | None] = [None] * len(self.upstreams)
        self._on_health_change = on_health_change
        self._tasks: list[asyncio.Task] = []
        self._by_model: dict[str, tuple[int, ...]] = {}
        for up in self.upstreams:
            for model in up.config.models:
                self._by_model[model] = self._by_model.get(model, ()) + (up.index,)

    def serving(self, model: str) -> tuple[int, ...]:
        """Indexes of the backends configured for `model` (empty if none)."""
        return self._by_model.get(model, ())

    async def start(self) -> None:
        for up in self.upstreams:
            await up.start()
        # one probe before serving, so a dead backend is not tried first
        await asyncio.gather(*(self._probe(up) for up in self.upstreams))
        await asyncio.gather(*(self._scrape(up) for up in self.upstreams))
        self._tasks = [
            asyncio.create_task(
                self._loop(self._probe, self.config.health.interval_s), name="health"
            ),
            asyncio.create_task(
                self._loop(self._scrape, self.config.scrape_interval_s), name="scrape"
            ),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        for up in self.upstreams:
            await up.close()

    async def _loop(self, step, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.gather(*(step(up) for up in self.upstreams), return_exceptions=True)

    async def _probe(self, up: Upstream) -> None:
        try:
            status, _ = await up.get(up.config.health_path, self.config.health.timeout_s)
        except UpstreamUnavailable as exc:
            self.report_failure(up.index, exc.reason)
            return
        if status >= 400:
            self.report_failure(up.index, f"health probe HTTP {status}")
        else:
            self.report_success(up.index)

    async def _scrape(self, up: Upstream) -> None:
        try:
            status, body = await up.get(up.config.metrics_path, self.config.health.timeout_s)
            if status != 200:
                return
            self.metrics[up.index] = parse_engine_metrics(
                body.decode("utf-8", "replace"), time.monotonic()
            )
        except (UpstreamUnavailable, MetricsParseError) as exc:
            # stale or missing metrics are tolerated: the Router ages them out itself
            log.debug("scrape %s failed: %s", up.name, exc)

    def report_failure(self, index: int, reason: str) -> None:
        """A failed probe or a request that failed before its first byte."""
        state = self.health[index]
        state.consecutive_failures += 1
        state.consecutive_successes = 0
        state.last_error = reason
        if state.is_up and state.consecutive_failures >= self.config.health.eject_after_failures:
            state.is_up = False
            self.healthy[index] = False
            log.warning("backend %s ejected: %s", self.upstreams[index].name, reason)
            if self._on_health_change:
                self._on_health_change(index, False)

    def report_success(self, index: int) -> None:
        state = self.health[index]
        state.consecutive_successes += 1
        state.consecutive_failures = 0
        if (
            not state.is_up
            and state.consecutive_successes >= self.config.health.readmit_after_successes
        ):
            state.is_up = True
            state.last_error = ""
            self.healthy[index] = True
            log.warning("backend %s readmitted", self.upstreams[index].name)
            if self._on_health_change:
                self._on_health_change(index, True)

    async def list_models(self) -> list[dict]:
        """The union of every healthy backend's `/v1/models`, plus configured names."""
        seen: dict[str, dict] = {}

        async def fetch(up: Upstream) -> None:
            if not self.healthy[up.index]:
                return
            try:
                status, body = await up.get("/v1/models", self.config.health.timeout_s)
            except UpstreamUnavailable:
                return
            if status != 200:
                return
            try:
                data = orjson.loads(body).get("data", [])
            except (orjson.JSONDecodeError, AttributeError):
                return
            for item in data:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    seen.setdefault(
                        item["id"],
                        {
                            "id": item["id"],
                            "object": "model",
                            "created": item.get("created", 0),
                            "owned_by": item.get("owned_by", up.name),
                        },
                    )

        await asyncio.gather(*(fetch(up) for up in self.upstreams))
        for up in self.upstreams:
            for model in up.config.models:
                seen.setdefault(
                    model, {"id": model, "object": "model", "created": 0, "owned_by": "selfserve"}
                )
        return list(seen.values())
