"""Where evaluations run: in this process, in local worker processes, or as Ray tasks.

All three take the same jobs — `(workload key, policy document, EvalPlan)` — and return
`Evaluation`s in submission order via futures. Workloads (with their request classes, see
`feasibility`), the cluster and the SLO are sent to each worker once (process initializer, or `ray.put`), so a job ships only a small policy
document. Workers ignore SIGINT: Ctrl-C is the tuner's to handle (it keeps the best so far),
and a worker must not die half-way through a job because of it.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from selfserve.tune.objective import EvalPlan, Evaluation, evaluate


class _WorkerContext:
    """The worker process's copy of the shared inputs, set once by the pool initializer.

    Process-local by construction (each worker process has its own), which is why it may
    live on a class: the main process never writes it.
    """

    workloads: Mapping[str, Any] = {}
    classes: Mapping[str, Any] = {}
    cluster: Any = None
    slo: Any = None


def _init_worker(workloads, cluster, slo, classes=None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WorkerContext.workloads = workloads
    _WorkerContext.classes = classes or {}
    _WorkerContext.cluster = cluster
    _WorkerContext.slo = slo


def _run_job(key: str, doc: dict, plan: EvalPlan) -> Evaluation:
    return evaluate(
        _WorkerContext.workloads[key],
        _WorkerContext.cluster,
        doc,
        _WorkerContext.slo,
        plan,
        _WorkerContext.classes.get(key),
    )


class Evaluator:
    """Base: `submit(key, doc, plan) -> Future[Evaluation]`, `close()`, `workers`."""

    workers: int = 1
    description: str = "serial"

    def submit(self, key: str, doc: dict, plan: EvalPlan) -> Future:
        raise NotImplementedError

    def close(self, cancel: bool = False) -> None:
        return None


class SerialEvaluator(Evaluator):
    """Runs each job at submission, in this process (tests, debugging, one core)."""

    def __init__(self, workloads: Mapping[str, Any], cluster, slo, classes=None):
        self.workloads, self.cluster, self.slo = dict(workloads), cluster, slo
        self.classes = dict(classes or {})

    def submit(self, key: str, doc: dict, plan: EvalPlan) -> Future:
        future: Future = Future()
        future.set_result(
            evaluate(self.workloads[key], self.cluster, doc, self.slo, plan, self.classes.get(key))
        )
        return future


class ProcessEvaluator(Evaluator):
    """Local worker processes (the default)."""

    def __init__(self, workloads: Mapping[str, Any], cluster, slo, workers: int, classes=None):
        self.workers = max(1, workers)
        self.description = f"{self.workers} local processes"
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            initializer=_init_worker,
            initargs=(dict(workloads), cluster, slo, dict(classes or {})),
        )

    def submit(self, key: str, doc: dict, plan: EvalPlan) -> Future:
        return self._pool.submit(_run_job, key, doc, plan)

    def close(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


class RayEvaluator(Evaluator):
    """Ray tasks on an existing cluster (`address`) or a local one (`"local"`)."""

    def __init__(
        self,
        workloads: Mapping[str, Any],
        cluster,
        slo,
        address: str,
        workers: int,
        classes=None,
    ):
        try:
            import ray
        except ImportError:
            raise RuntimeError(
                "--ray needs the optional Ray extra: pip install 'selfserve[ray]'"
            ) from None
        self._ray = ray
        self._owns_runtime = not ray.is_initialized()
        if self._owns_runtime:
            if address == "local":
                ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        self.workers = max(1, int(ray.cluster_resources().get("CPU", workers)))
        self.description = f"Ray at {address} ({self.workers} CPUs)"
        self._refs = {key: ray.put(value) for key, value in workloads.items()}
        self._classes = {key: ray.put(value) for key, value in (classes or {}).items()}
        self._cluster = ray.put(cluster)
        self._slo = ray.put(slo)
        self._task = ray.remote(num_cpus=1)(_ray_job)

    def submit(self, key: str, doc: dict, plan: EvalPlan) -> Future:
        ref = self._task.remote(
            self._refs[key], self._cluster, self._slo, doc, plan, self._classes.get(key)
        )
        return ref.future()

    def close(self, cancel: bool = False) -> None:
        if self._owns_runtime:
            self._ray.shutdown()


def _ray_job(workload, cluster, slo, doc: dict, plan: EvalPlan, classes=None) -> Evaluation:
    return evaluate(workload, cluster, doc, slo, plan, classes)


def make_evaluator(
    workloads: Mapping[str, Any],
    cluster,
    slo,
    *,
    workers: int | None = None,
    ray: str | None = None,
    classes: Mapping[str, Any] | None = None,
) -> Evaluator:
    """The evaluator for the options: Ray when `ray` is given, else processes or serial.
    `classes` maps a workload key to its `RequestClasses` (needed by `capacity`)."""
    count = workers if workers is not None else max(1, (os.cpu_count() or 2))
    if ray:
        return RayEvaluator(workloads, cluster, slo, ray, count, classes)
    if count <= 1:
        return SerialEvaluator(workloads, cluster, slo, classes)
    return ProcessEvaluator(workloads, cluster, slo, count, classes)


class CachedEvaluator(Evaluator):
    """Remembers evaluations on disk, keyed by what determines them exactly.

    The simulator is deterministic for a seed, so (workload fingerprint, cluster, SLO,
    policy spec, plan) fixes the result: re-running `tune` with another budget or seed of
    the search re-uses every anchor's training and validation scores instead of paying for
    them again. The file is a pickle written by this tool only; it is never shared.
    """

    def __init__(
        self, inner: Evaluator, path: str | Path, fingerprints: Mapping[str, str], context: str
    ):
        self.inner = inner
        self.workers = inner.workers
        self.description = f"{inner.description}, cache {path}"
        self.path = Path(path)
        self._fingerprints = dict(fingerprints)
        self._context = context
        self._entries: dict[str, Evaluation] = {}
        if self.path.is_file():
            try:
                with self.path.open("rb") as handle:
                    loaded = pickle.load(handle)
                if isinstance(loaded, dict):
                    self._entries = loaded
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
                self._entries = {}  # a stale or foreign cache is simply not used
        self.hits = 0

    def _key(self, key: str, doc: Any, plan: EvalPlan) -> str:
        spec = (
            orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()
            if not isinstance(doc, str)
            else doc
        )
        return "|".join((self._fingerprints[key], self._context, spec, repr(plan)))

    def submit(self, key: str, doc: Any, plan: EvalPlan) -> Future:
        cache_key = self._key(key, doc, plan)
        known = self._entries.get(cache_key)
        if known is not None:
            self.hits += 1
            future: Future = Future()
            future.set_result(known)
            return future
        future = self.inner.submit(key, doc, plan)

        def remember(done: Future, cache_key: str = cache_key) -> None:
            if not done.cancelled() and done.exception() is None:
                result = done.result()
                if result.error is None:
                    self._entries[cache_key] = result

        future.add_done_callback(remember)
        return future

    def close(self, cancel: bool = False) -> None:
        self.inner.close(cancel)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("wb") as handle:
            pickle.dump(self._entries, handle)
        temporary.replace(self.path)
