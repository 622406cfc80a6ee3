"""Shared harness of the benchmarks: isolated worker subprocesses, memory, machine facts.

Each measured implementation runs in its own Python subprocess (:func:`run_worker`), so
its peak memory is its own. Inside the worker, :func:`reset_peak` clears the kernel's
peak-RSS counter (``VmHWM``, via ``/proc/self/clear_refs``, Linux >= 4.0) once the data
are in memory, so ``peak_rss() - baseline`` is exactly the extra memory of the measured
call, not of the data generation that came before it. :func:`limit_memory` caps the
worker's address space so that an implementation that blows up raises ``MemoryError``
(reported as out of memory) instead of taking the machine down.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time

RESULT_PREFIX = "RESULT "


# -- inside a worker -------------------------------------------------------------------
def limit_memory(gigabytes: float) -> None:
    """Cap this process's address space (RLIMIT_AS) at ``gigabytes``."""
    limit = int(gigabytes * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_bytes() -> int:
    """Current resident set size."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size since the process start or the last :func:`reset_peak`."""
    return _status_kib("VmHWM") * 1024


def reset_peak() -> bool:
    """Reset the peak-RSS counter to the current RSS; False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def release_free_memory() -> None:
    """Return the allocator's freed-but-retained heap pages to the kernel (glibc).

    Without it, memory freed before the measurement (data generation temporaries) stays
    resident and is silently reused by the measured call, hiding its allocations.
    """
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Measure:
    """Context manager: wall time and peak extra RSS of the block it wraps.

    ``extra`` is the peak RSS during the block minus the RSS on entry; ``cpu`` the CPU
    seconds of the process (all threads), steadier than wall time on a loaded machine.
    """

    def __enter__(self):
        import gc
        gc.collect()
        release_free_memory()
        reset_peak()
        self.baseline = rss_bytes()
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu = time.process_time() - self._c0
        self.extra = max(0, peak_rss_bytes() - self.baseline)


def emit(result: dict) -> None:
    """Hand the worker's result (JSON-ready dict) to the parent on stdout."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


# -- in the parent ---------------------------------------------------------------------
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "POLARS_MAX_THREADS", "RAYON_NUM_THREADS")


def thread_env(threads: int) -> dict:
    """The environment with every BLAS / OpenMP / numba thread pool set to ``threads``."""
    env = dict(os.environ)
    env.update({v: str(threads) for v in THREAD_VARIABLES})
    return env


def run_worker(argv: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run ``python argv...`` as a worker; return its result dict, or a failure record.

    A failure record has ``status`` in {"timeout", "oom", "crashed", "error"} and a
    ``detail`` string (the tail of stderr).
    """
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        return {"status": "timeout", "detail": f"no result within {timeout:.0f} s",
                "elapsed_s": time.perf_counter() - t0,
                "stderr": (exc.stderr or b"")[-2000:].decode(errors="replace")
                if isinstance(exc.stderr, bytes) else (exc.stderr or "")[-2000:]}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = proc.stderr[-2000:]
    if proc.returncode < 0:
        status = "oom" if proc.returncode == -9 else "crashed"
        return {"status": status, "detail": f"killed by signal {-proc.returncode}", "stderr": tail}
    status = "oom" if "MemoryError" in tail or "Unable to allocate" in tail else "error"
    return {"status": status, "detail": f"exit code {proc.returncode}", "stderr": tail}


def machine_info() -> dict:
    """Facts to print next to the numbers: cores, CPU, BLAS, load, versions, date."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    blas = []
    try:
        import numpy  # noqa: F401  (load numpy's BLAS so threadpoolctl sees it)
        from threadpoolctl import threadpool_info
        blas = [f"{i['internal_api']} {i['version']} ({i['num_threads']} threads, "
                f"{i.get('architecture', '?')}, {i['prefix']})" for i in threadpool_info()
                if i["user_api"] == "blas"]
    except ImportError as exc:  # threadpoolctl missing: say so, do not fail the run
        blas = [f"unknown ({exc})"]
    versions = {}
    for name in ("numpy", "scipy", "pandas", "causalflow", "linearmodels", "statsmodels", "pyfixest"):
        try:
            versions[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            versions[name] = None
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    here = os.path.dirname(os.path.abspath(__file__))
    commit = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", here, "status", "--short", "--", "../causalflow"],
                           capture_output=True, text=True, check=False).stdout.split("\n")
    return {"commit": commit, "uncommitted_causalflow_files": [d[3:].replace("../", "") for d in dirty if d.strip()],
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "nproc": os.cpu_count(), "cpu": cpu, "blas": blas, "python": platform.python_version(),
            "versions": versions, "uptime": uptime}
