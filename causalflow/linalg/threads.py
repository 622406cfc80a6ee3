"""One BLAS thread for the row-block kernels."""

from __future__ import annotations

from threadpoolctl import ThreadpoolController

__all__ = ["single_blas_thread"]

_CONTROLLER: ThreadpoolController | None = None


def single_blas_thread():
    """Context manager limiting BLAS to one thread.

    Row-block GEMMs are tall and thin (p ~ 20 columns): one thread is fastest, and BLAS
    threads that spin-wait slow down badly when the machine is busy (measured: a 65k x 22
    GEMM took 17 ms on one thread and 525 ms on two at load 7). The controller scans the
    loaded libraries once; a scan per call costs milliseconds.

    Examples
    --------
    >>> import numpy as np
    >>> from threadpoolctl import threadpool_info
    >>> with single_blas_thread():
    ...     blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    ...     gram = np.ones((1000, 3)).T @ np.ones((1000, 3))
    >>> set(blas) <= {1}, float(gram[0, 0])
    (True, 1000.0)
    """
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")
