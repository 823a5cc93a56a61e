"""tests/unit: report numpy's OpenBLAS kernel; refuse to run under another kernel than OP3_WALK_BLAS_KERNEL names
(``make test-portable`` sets it with OPENBLAS_CORETYPE, so a run cannot silently use another kernel)."""
import os

import pytest

from blas_kernel import numpy_kernel


def pytest_report_header(config):
    return "numpy OpenBLAS kernel: %s (OPENBLAS_CORETYPE=%s)" % (numpy_kernel(), os.environ.get("OPENBLAS_CORETYPE",
                                                                                                 ""))


def pytest_configure(config):
    expected = os.environ.get("OP3_WALK_BLAS_KERNEL")
    if expected:
        kernel = numpy_kernel()
        if kernel != expected:
            raise pytest.UsageError("OP3_WALK_BLAS_KERNEL=%s but numpy's OpenBLAS uses kernel %s "
                                    "(OPENBLAS_CORETYPE=%s)" % (expected, kernel,
                                                                os.environ.get("OPENBLAS_CORETYPE", "")))
