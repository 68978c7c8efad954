"""``rtseg batch --ray``: the chunks mapped over a pool of model replicas with Ray Data.

Each Ray actor opens the model once and runs :class:`~rtseg.batch.work.ChunkWorker` on the
chunks it is handed (``map_batches`` with an actor pool of ``--workers`` replicas, each reserving
``--num-cpus`` CPUs and ``--num-gpus`` GPUs). The workers write their outputs straight into the
output folder, which on a cluster must be a path every node sees (a shared filesystem); only small
per-chunk counts travel back to the driver, which draws the progress bar and writes the summary.

A worker process that dies (killed, out of memory, a crashed runtime) is restarted by Ray and
its chunk handed out again; the new attempt skips the frames the dead one finished. Ray retries
without limit, so the workers count the attempts themselves (claim files in the output folder,
see ``work.py``) and give a chunk up after :data:`~rtseg.batch.work.MAX_ATTEMPTS` of them: a model
that crashes its process on every frame ends the job instead of looping. Errors inside a chunk
are returned as counts and messages, never raised, so one bad input cannot fail the dataset.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from dataclasses import asdict
from typing import Callable, Iterator

import numpy as np

from rtseg.batch.inputs import Chunk
from rtseg.errors import RtsegError


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RtsegError("--ray needs Ray Data: pip install 'rtseg[ray]' (or pip install 'ray[data]')") from None
    return ray


@contextlib.contextmanager
def _keep_signal_handlers():
    """ray.init installs its own SIGTERM handler in the driver; rtseg's (finish the frames, keep
    the outputs, exit 143) must stay."""
    names = [s for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s)]
    saved = {s: signal.getsignal(getattr(signal, s)) for s in names}
    try:
        yield
    finally:
        for s, handler in saved.items():
            if handler is not None:
                signal.signal(getattr(signal, s), handler)


def _reachable(address: str) -> None:
    """``host:port`` and ``ray://host:port`` answer a TCP connect within a few seconds: Ray itself
    retries an unreachable address for minutes, printing warnings, before it gives up."""
    import socket

    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise RtsegError(f"--ray address must be auto, host:port or ray://host:port, got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise RtsegError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def connect(address: str | None, local_cpus: int | None = None) -> bool:
    """Joins the cluster at ``address`` (``auto``, ``host:port``, ``ray://host:port``) or, for
    None, starts a local instance with ``local_cpus`` CPUs. Reuses a connection this process
    already has. Returns whether this call connected (and so should disconnect at the end).

    Raises:
        RtsegError: Ray is not installed or the address cannot be reached (one line).
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)  # Ray's INFO lines would drown the progress bar
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
              "configure_logging": False}
    try:
        with _keep_signal_handlers():
            if address is None:
                ray.init(address="local", num_cpus=local_cpus, **kwargs)
            else:
                if address != "auto":
                    _reachable(address)
                ray.init(address=address, **kwargs)
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise RtsegError(f"cannot connect to the Ray cluster at {address}: {first[:300]}") from None
    return True


def disconnect() -> None:
    import ray

    ray.shutdown()


def check_resources(workers: int, num_cpus: float, num_gpus: float) -> dict:
    """The cluster's CPUs and GPUs; refuses a pool whose single worker cannot be placed."""
    import ray

    have = ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0), have.get("GPU", 0)
    if num_cpus > cpus or num_gpus > gpus:
        raise RtsegError(f"a worker needs {num_cpus:g} CPU(s) and {num_gpus:g} GPU(s), but the Ray cluster has "
                         f"{cpus:g} CPU(s) and {gpus:g} GPU(s); lower --num-cpus/--num-gpus")
    fit = min(int(cpus // num_cpus) if num_cpus else workers, int(gpus // num_gpus) if num_gpus else workers)
    if fit < workers:
        raise RtsegError(f"--workers {workers} needs {workers * num_cpus:g} CPU(s) and {workers * num_gpus:g} GPU(s); "
                         f"the Ray cluster has {cpus:g} and {gpus:g} (room for {fit} worker(s))")
    return {"cpus": cpus, "gpus": gpus}


class RayChunkWorker:
    """One model replica in a Ray actor (the ``map_batches`` callable); ``job`` holds the
    options, the model to open and the torch threads."""

    def __init__(self, job: dict):
        import torch

        from rtseg.batch.work import ChunkWorker

        torch.set_num_threads(job["threads"])
        if job["factory"] is not None:
            backend = job["factory"]()
        else:
            from rtseg.backends import open_backend

            backend = open_backend(job["model"], device=job["device"], runtime=job["runtime"])
        self.worker = ChunkWorker(backend, job["opts"], track_attempts=True)

    def __call__(self, batch: dict) -> dict:
        results = [json.dumps(self.worker.run(Chunk(**json.loads(text)))) for text in batch["chunk"]]
        return {"result": np.array(results, dtype=object)}


def run_chunks(chunks: list[Chunk], opts, model: str, runtime: str | None, workers: int, num_cpus: float,
               num_gpus: float, factory: Callable | None = None) -> Iterator[dict]:
    """Yields each chunk's result as it finishes, in any order."""
    ray = import_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False   # the driver draws one bar over all inputs
    ctx.print_on_execution_start = False
    device = opts.device or ("cuda" if num_gpus else None)
    threads = opts.threads or max(1, int(num_cpus))
    job = {"opts": opts, "model": model, "runtime": runtime, "device": device, "threads": threads,
           "factory": factory}
    items = [{"chunk": json.dumps(asdict(c))} for c in chunks]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        RayChunkWorker, fn_constructor_kwargs={"job": job}, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=num_cpus, num_gpus=num_gpus)
    for row in ds.iter_rows():
        yield json.loads(row["result"])


def local_cpus(workers: int, num_cpus: float) -> int:
    """CPUs of a local instance: the machine's, or as many as the pool reserves if that is more
    (reservations are bookkeeping: an oversubscribed pool is slower, never stuck)."""
    return max(os.cpu_count() or 1, int(np.ceil(workers * num_cpus)))


__all__ = ["RayChunkWorker", "check_resources", "connect", "disconnect", "import_ray",
           "local_cpus", "run_chunks"]
