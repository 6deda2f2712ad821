"""Where a stage's batches run, and the policy every batch task gets.

`executor:` in the run config (optional; default = local):

    executor: {kind: dask, address: null, n_workers: 2, gpus_per_worker: 1, task_timeout_s: 3600}

- kind local: the flow's own task runner (threads in the flow process; models are shared and locked).
- kind dask: prefect-dask's DaskTaskRunner. With `address`, an existing scheduler (a long-lived
  cluster, models stay resident between runs); without, a cluster on this host for the stage:
  one worker process per GPU slice, CUDA_VISIBLE_DEVICES pinned per worker, 1 thread each. Models
  stay resident per worker process through the per-process caches in g2u_tasks.
- Every batch task gets one policy, set here (with_policy): the `gpu` tag (Prefect tag concurrency
  limits), retries with exponential backoff + jitter on transient storage/endpoint errors only,
  `task_timeout_s`, no cache and no persisted result (results are never pickled to storage).
- A task run takes `batches_per_task` batches (default 8), one after another: Prefect's cost per
  task run (states, events, logs: tens of ms of CPU here and in its server) is paid once per group,
  not per batch. Results still come back per batch, in order; a group's retry redoes its batches.

`BatchRunner.batching()` hands the core's stage sequences (g2u_tasks.*.stage) this mapping.
Prefect is imported lazily: perf/scaleout.py uses `local_cluster` on GPU hosts without Prefect.
"""
from __future__ import annotations

import functools
import itertools
import logging
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    from distributed import SpecCluster
    from prefect import Task
    from prefect.futures import PrefectFuture
    from prefect.task_runners import TaskRunner

    from g2u_tasks.batching import Batching
    from g2u_tasks.config import RunConfig

log = logging.getLogger(__name__)

TRANSIENT_HTTP_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
TRANSIENT_S3_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                                "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "503", "500"})


class ExecutorSpec(BaseModel):
    """The `executor:` block of a run config. It changes where work runs, never the results."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "dask"] = "local"
    address: str | None = None  # tcp://scheduler:8786 of a running cluster; None: one per stage
    n_workers: int = Field(1, ge=1)  # worker processes of the per-stage cluster
    gpus_per_worker: int = Field(1, ge=0)  # GPUs pinned per worker; 0: CPU-only workers
    threads_per_worker: int = Field(1, ge=1)  # 1: one batch at a time per worker (per GPU)
    task_timeout_s: float | None = Field(None, gt=0)  # per batch task
    retries: int = Field(3, ge=0)  # on transient errors only
    retry_delay_s: float = Field(2.0, ge=0)  # first delay; doubles per retry
    retry_jitter: float = Field(0.5, ge=0)  # delays vary by up to this fraction
    gpu_tag: str = "gpu"  # tag for Prefect's tag concurrency limits
    batches_per_task: int = Field(8, ge=1)  # batches one task run takes, one after another
    # Task runs submitted and not yet consumed, per stage. Each holds its batches' image bytes and
    # results, and on the local runner a thread: bounded, peak memory follows this x batches_per_task,
    # not the run's size. None: 2 locally (one model, locked per call: one group runs while the next
    # waits ready), 2 per Dask worker thread.
    max_in_flight: int | None = Field(None, ge=1)

    def in_flight(self, workers: int | None = None) -> int:
        if self.max_in_flight is not None:
            return self.max_in_flight
        return 2 if self.kind == "local" else 2 * max(1, workers or self.n_workers * self.threads_per_worker)

    @model_validator(mode="after")
    def _address_needs_dask(self) -> "ExecutorSpec":
        if self.address and self.kind != "dask":
            raise ValueError("executor.address needs executor.kind: dask")
        return self


def executor_spec(cfg: "RunConfig") -> ExecutorSpec:
    from g2u_tasks.config import ConfigError, one_line

    try:
        return ExecutorSpec.model_validate(cfg.executor or {})
    except ValidationError as err:
        raise ConfigError(one_line(err, prefix="executor.")) from None


# ---- the per-stage cluster on one host ----------------------------------------------------------

def cuda_slices(n_workers: int, gpus_per_worker: int, visible: str | None) -> list[str]:
    """CUDA_VISIBLE_DEVICES for each worker: consecutive slices of the visible devices."""
    if gpus_per_worker == 0:
        return [""] * n_workers  # hide GPUs: CPU workers
    need = n_workers * gpus_per_worker
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(need)]
    if len(devices) < need:
        raise ValueError(f"{n_workers} worker(s) x {gpus_per_worker} GPU(s) need {need} devices, "
                         f"CUDA_VISIBLE_DEVICES has {len(devices)}: {visible!r}")
    return [",".join(devices[i * gpus_per_worker:(i + 1) * gpus_per_worker]) for i in range(n_workers)]


def local_cluster(n_workers: int = 1, gpus_per_worker: int = 1, threads_per_worker: int = 1,
                  silence_logs: int = logging.WARNING) -> "SpecCluster":
    """A dask.distributed cluster on loopback: worker i is a process (Nanny) with its own GPU slice.

    No memory limit: a worker that loads a checkpoint through host RAM must not be killed for it."""
    from distributed import Nanny, Scheduler, SpecCluster

    logging.getLogger("distributed").setLevel(silence_logs)  # the scheduler logs in this process
    slices = cuda_slices(n_workers, gpus_per_worker, os.environ.get("CUDA_VISIBLE_DEVICES"))
    workers = {
        f"worker-{i}": {"cls": Nanny, "options": {
            "nthreads": threads_per_worker, "host": "127.0.0.1", "memory_limit": 0,
            "env": {"CUDA_VISIBLE_DEVICES": devices}, "silence_logs": silence_logs,
            "resources": {"GPU": gpus_per_worker} if gpus_per_worker else None,
        }}
        for i, devices in enumerate(slices)
    }
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=silence_logs, name="g2u")


def dask_task_runner(spec: ExecutorSpec):
    from prefect_dask import DaskTaskRunner

    if spec.address:
        return DaskTaskRunner(address=spec.address)
    return DaskTaskRunner(cluster_class=local_cluster, cluster_kwargs={
        "n_workers": spec.n_workers, "gpus_per_worker": spec.gpus_per_worker,
        "threads_per_worker": spec.threads_per_worker})


# ---- retries: transient errors only ---------------------------------------------------------------

@functools.cache
def _transient_types() -> tuple[type[BaseException], ...]:
    """Network-level errors of the clients the store and endpoints use (those installed)."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import httpx
        types.append(httpx.TransportError)
    except ImportError:
        pass
    try:
        from botocore import exceptions as bx
        types += [bx.EndpointConnectionError, bx.ConnectionClosedError, bx.ReadTimeoutError,
                  bx.ConnectTimeoutError]
    except ImportError:
        pass
    try:
        import aiohttp
        types += [aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError]
    except ImportError:
        pass
    return tuple(types)


def _s3_error_code(exc: BaseException) -> str | None:
    try:
        from botocore.exceptions import ClientError
    except ImportError:
        return None
    return exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None


def is_transient(exc: BaseException | None) -> bool:
    """True for errors a retry can fix: lost connections, network timeouts, throttling, HTTP 5xx/429.
    Never for the task's own timeout, bad data, missing files or code errors. Follows the cause chain."""
    from prefect.task_engine import TaskRunTimeoutError

    from g2u_tasks.backends.openai_client import OpenAIRequestError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, TaskRunTimeoutError):
            return False
        if isinstance(exc, _transient_types()):
            return True
        status = getattr(exc, "status", None) or getattr(getattr(exc, "response", None), "status_code", None)
        status = status if isinstance(status, int) else None
        if status in TRANSIENT_HTTP_STATUS or (isinstance(exc, OpenAIRequestError) and status is None):
            return True
        if _s3_error_code(exc) in TRANSIENT_S3_CODES:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def retry_on_transient(task, task_run, state) -> bool:
    """Prefect retry_condition_fn: retry only when the failure is transient."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - classify, never swallow
        return is_transient(exc)
    return False


@functools.cache
def _task_of(fn: Callable) -> "Task":
    from prefect import task

    return task(fn, name=fn.__name__.replace("_", "-"))


class Group:
    """A task run's batches and fn's other keyword arguments, as one argument that Prefect passes on
    without walking into it (it walks lists, dicts and dataclasses looking for futures: every item
    of every batch, on every task run). Its own `quote` does the same but arrives wrapped on Dask."""

    __slots__ = ("batches", "fixed")

    def __init__(self, batches: list[list], fixed: dict[str, Any]):
        self.batches, self.fixed = batches, fixed


@functools.cache
def _grouped(fn: Callable) -> Callable:
    """`fn` over a Group of batches in one task run, named after `fn`; one result per batch, in order."""
    def run_group(batch: Group) -> list[Any]:
        return [fn(batch=b, **batch.fixed) for b in batch.batches]

    functools.update_wrapper(run_group, fn, assigned=("__module__", "__name__", "__qualname__", "__doc__"),
                             updated=())
    del run_group.__wrapped__  # Prefect reads this function's parameters, not fn's
    return run_group


def with_policy(task: "Task | Callable", spec: ExecutorSpec) -> "Task":
    """The batch task (a plain function becomes one named after it) with the GPU tag, transient-error
    retries (exponential backoff + jitter), timeout, no cache and no persisted result."""
    from prefect import Task
    from prefect.cache_policies import NO_CACHE
    from prefect.tasks import exponential_backoff

    task = task if isinstance(task, Task) else _task_of(task)
    return task.with_options(
        cache_policy=NO_CACHE,
        persist_result=False,
        tags={*task.tags, spec.gpu_tag},
        retries=spec.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=spec.retry_delay_s) if spec.retries else 0,
        retry_jitter_factor=spec.retry_jitter,
        retry_condition_fn=retry_on_transient,
        timeout_seconds=spec.task_timeout_s,
    )


# ---- a stage's batches ----------------------------------------------------------------------------

def _taken(result: Any) -> Any:
    """A batch result the stage consumes itself. Prefect links every task result (and its direct
    parts) to its task run for the rest of the flow run, in case it becomes another task's input;
    batch results never do, so the links would only grow with the number of batches."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is not None:
        for obj in (result, *(result if isinstance(result, (tuple, list)) else ())):
            ctx.run_results.pop(id(obj), None)
    return result


def _taken_group(results: list[Any]) -> list[Any]:
    """A group's batch results (see _grouped), each taken as one batch task's result was."""
    return [_taken(r) for r in _taken(results)]


class BatchRunner:
    """Maps a batch task over batches on the stage's task runner (futures in batch order)."""

    def __init__(self, runner: "TaskRunner", spec: ExecutorSpec):
        self.runner, self.spec = runner, spec

    def map(self, task: "Task | Callable", batches: list, **fixed: Any) -> list["PrefectFuture"]:
        """Every batch submitted at once (each as the task's `batch` argument); futures in batch order."""
        from prefect import unmapped

        if not batches:
            return []
        params = {k: unmapped(v) for k, v in fixed.items()} | {"batch": batches}
        return list(self.runner.map(with_policy(task, self.spec), params))

    def map_batches(self, fn: Callable, batches: list, **fixed: Any) -> Iterator[Any]:
        """The core's mapping contract: results in batch order, as each is needed. Batches go
        `batches_per_task` to a task run; at most `in_flight()` task runs are submitted and not yet
        consumed: a window that slides as results are taken, so threads, arguments and results held
        at once do not grow with the run."""
        from collections import deque

        if not batches:
            return
        task = with_policy(_grouped(fn), self.spec)
        window, pending = self.in_flight(), deque()
        stream = iter(batches)
        while group := list(itertools.islice(stream, self.spec.batches_per_task)):
            if len(pending) >= window:
                yield from _taken_group(pending.popleft().result())
            pending.append(self.runner.submit(task, {"batch": Group(group, fixed)}))
        while pending:
            yield from _taken_group(pending.popleft().result())

    def in_flight(self) -> int:
        workers = None
        if self.spec.kind == "dask" and self.spec.address and self.spec.max_in_flight is None:
            try:  # an existing cluster: its size is known only once connected
                workers = sum(w.get("nthreads", 1) for w in self.runner.client.scheduler_info()["workers"].values())
            except Exception:  # noqa: BLE001 - fall back to the spec's default
                workers = None
        return self.spec.in_flight(workers)

    def load_understander(self, model_spec) -> tuple[str, str | None]:
        """Load the understander where the batches run (on every Dask worker at once, never in this
        process then) and return its (name, notes)."""
        from g2u_tasks.understanding.stage import describe_understander

        if self.spec.kind == "local":
            return describe_understander(model_spec)
        client = self.runner.client
        if not self.spec.address:
            client.wait_for_workers(self.spec.n_workers)
        futures = [client.submit(describe_understander, model_spec, workers=[w], pure=False)
                   for w in client.scheduler_info()["workers"]]
        return client.gather(futures)[0]

    def batching(self, run_log) -> "Batching":
        """What the core's stage sequences take: this runner's mapping, the flow's logger, progress."""
        from g2u_tasks.batching import Batching
        from flows.progress import flow_progress

        return Batching(map_batches=self.map_batches, log=run_log, load_understander=self.load_understander,
                        progress=flow_progress(run_log))


@contextmanager
def _api_shared_with_workers() -> Iterator[None]:
    """Dask workers report their task runs to this flow's API. Under Prefect's temporary local server
    the API URL setting is empty and each worker would start a server of its own: pin the running one."""
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ctx = FlowRunContext.get()
    if PREFECT_API_URL.value() or ctx is None or ctx.client is None:
        yield
        return
    with temporary_settings(updates={PREFECT_API_URL: str(ctx.client.api_url).rstrip("/")}):
        yield


@contextmanager
def batch_runner(cfg: "RunConfig") -> Iterator[BatchRunner]:
    """The stage's batch runner: the flow's own task runner (local) or a started DaskTaskRunner."""
    from prefect.context import FlowRunContext

    spec = executor_spec(cfg)
    if spec.kind == "local":
        yield BatchRunner(FlowRunContext.get().task_runner, spec)
        return
    if spec.address and cfg.store.startswith("file://"):
        log.warning("executor.address with a file:// store: every worker host must see %s", cfg.store)
    with _api_shared_with_workers(), dask_task_runner(spec) as runner:
        yield BatchRunner(runner, spec)
