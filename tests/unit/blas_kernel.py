"""Which OpenBLAS kernel numpy computes with, and which kernels this CPU can run (``make test-portable``).

numpy's OpenBLAS picks a kernel per CPU (or the one ``OPENBLAS_CORETYPE`` names); kernels round differently in the
last bits, and a walking simulation turns those bits into another trajectory.  ``make test-portable`` runs the
simulation tests (pytest marker ``sim``) under several kernels that this CPU can run.  OpenBLAS (0.3.2x's
force_coretype) does not check a forced kernel against the CPU: an AVX-512 kernel on a CPU without AVX-512 would
die of an illegal instruction, hence the check of /proc/cpuinfo here, and the check of the kernel really in use.

    python tests/unit/blas_kernel.py                       the kernel numpy uses (exit 1 if not OpenBLAS)
    python tests/unit/blas_kernel.py --runnable K1 K2 ...  those of K1 K2 ... this CPU can run, one a line
    python tests/unit/blas_kernel.py --choose K1 K2 ... [--fallback F ...]
        CORETYPE:KERNEL words to run the tests under: each K this CPU can run, when it gives a kernel not chosen
        yet (OpenBLAS maps some names onto others: Zen runs the Haswell kernel); the Fs, in order, only while fewer
        than two distinct kernels were chosen.  What it leaves out, and why, goes to stderr.
"""
import ctypes
import os
import subprocess
import sys

# the CPU flags each kernel's code needs (OpenBLAS builds them with -mavx2 -mfma / -march=skylake-avx512)
KERNEL_FLAGS = {
    "Haswell": ("avx2", "fma"),
    "SkylakeX": ("avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"),
    "Zen": ("avx2", "fma"),
    "Sandybridge": ("avx",),
    "Prescott": ("sse2", "pni"),  # SSE3 ("pni"): any x86-64 CPU; a second kernel where AVX-512 is missing
}
_CORENAME_SYMBOLS = ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_",
                     "openblas_get_corename")


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def runnable(kernels, flags=None):
    """The kernels of ``kernels`` whose instructions this CPU has (unknown kernel names are left out)."""
    flags = cpu_flags() if flags is None else flags
    return [k for k in kernels if k in KERNEL_FLAGS and set(KERNEL_FLAGS[k]) <= flags]


def numpy_kernel():
    """The name of the kernel numpy's OpenBLAS uses ("Haswell", "SkylakeX", ...), or None when numpy does not use
    an OpenBLAS this can ask (another BLAS, or no /proc/self/maps)."""
    import numpy  # noqa: F401  (loads numpy's BLAS)
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted(set(line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line))
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in _CORENAME_SYMBOLS:
            function = getattr(lib, symbol, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                return function().decode()
    return None


def kernel_for(coretype):
    """The kernel numpy's OpenBLAS uses in a fresh process with OPENBLAS_CORETYPE=``coretype`` (None: not
    OpenBLAS)."""
    result = subprocess.run([sys.executable, os.path.abspath(__file__)], capture_output=True, text=True,
                            env=dict(os.environ, OPENBLAS_CORETYPE=coretype))
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def choose(kernels, fallbacks, log=lambda message: print(message, file=sys.stderr)):
    """[(coretype, kernel)] to run the tests under: see the module's docstring."""
    flags, chosen = cpu_flags(), []
    for coretype in list(kernels) + list(fallbacks):
        if coretype in fallbacks and coretype not in kernels and len(chosen) >= 2:
            break
        if coretype not in KERNEL_FLAGS:
            log("[blas_kernel] %s: unknown kernel (known: %s), left out" % (coretype, ", ".join(KERNEL_FLAGS)))
            continue
        missing = [f for f in KERNEL_FLAGS[coretype] if f not in flags]
        if missing:
            log("[blas_kernel] %s: left out, this CPU lacks %s" % (coretype, " ".join(missing)))
            continue
        kernel = kernel_for(coretype)
        if kernel is None:
            log("[blas_kernel] numpy does not use an OpenBLAS whose kernel can be read: OPENBLAS_CORETYPE changes "
                "nothing here")
            return []
        if kernel in [k for _, k in chosen]:
            log("[blas_kernel] OPENBLAS_CORETYPE=%s runs kernel %s, already chosen: left out" % (coretype, kernel))
            continue
        chosen.append((coretype, kernel))
    return chosen


def main(argv):
    if argv[:1] == ["--choose"]:
        names = argv[1:]
        cut = names.index("--fallback") if "--fallback" in names else len(names)
        print(" ".join("%s:%s" % pair for pair in choose(names[:cut], names[cut + 1:])))
        return 0
    if argv[:1] == ["--runnable"]:
        for kernel in runnable(argv[1:]):
            print(kernel)
        return 0
    kernel = numpy_kernel()
    if kernel is None:
        print("numpy does not use OpenBLAS (or its kernel cannot be read)", file=sys.stderr)
        return 1
    print(kernel)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
