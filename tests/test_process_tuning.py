"""connector.cli.tune_process: what the healthsync command sets once at its start."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Eight threads allocate at once; glibc's malloc_info then lists one <heap> per arena in use.
THREADS = textwrap.dedent("""
    import ctypes, sys, tempfile, threading
    tune = sys.argv[1] == "tune"
    if tune:
        from connector.cli import tune_process
        print("set", tune_process())
    barrier = threading.Barrier(8)
    def work():
        barrier.wait()
        held = [bytearray(200) for _ in range(20_000)]
        barrier.wait()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL("libc.so.6")
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as out:
        fp = libc.fopen(out.name.encode(), b"w")
        libc.malloc_info(0, fp)
        libc.fclose(fp)
        print("heaps", open(out.name).read().count("<heap nr="))
""")


def _printed(script: str, mode: str, env: dict[str, str]) -> str:
    """What `script` prints in a fresh interpreter (`mode`: "tune" calls tune_process first)."""
    return subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True,
                          env={**env, "PYTHONPATH": REPO}, timeout=120).stdout


def _heaps(mode: str, env: dict[str, str]) -> tuple[str, int]:
    lines = dict(line.split(" ", 1) for line in _printed(THREADS, mode, env).splitlines())
    return lines.get("set", ""), int(lines["heaps"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas")
def test_the_command_keeps_malloc_to_two_arenas_unless_the_environment_says():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    _, untuned = _heaps("plain", env)
    assert untuned > 2  # eight threads allocating at once get arenas of their own
    said, tuned = _heaps("tune", env)
    assert said == "2" and tuned <= 2
    said, chosen = _heaps("tune", {**env, "MALLOC_ARENA_MAX": "4"})
    assert said == "None" and 2 < chosen <= 4  # glibc's own setting stands


def test_the_cycle_collector_runs_less_often():
    done = subprocess.run([sys.executable, "-c", "import gc; from connector.cli import tune_process; "
                           "tune_process(); print(gc.get_threshold())"], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": REPO}, timeout=60)
    assert done.stdout.strip() == "(50000, 20, 10)"


# A 1 MB block freed, then twenty of 200 KB held: glibc's mallinfo2 counts the blocks it mapped alone.
MAPPED = textwrap.dedent("""
    import ctypes, sys
    if sys.argv[1] == "tune":
        from connector.cli import tune_process
        tune_process()
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    big = bytearray(1 << 20)
    del big  # by default this raises the mapping threshold to 1 MB
    held = [bytearray(200_000) for _ in range(20)]
    print(libc.mallinfo2().hblks)
""")


def _mapped(mode: str, env: dict[str, str]) -> int:
    return int(_printed(MAPPED, mode, env).strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_command_maps_large_blocks_alone_unless_the_environment_says():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    assert _mapped("plain", env) < 20  # the freed 1 MB block moved the threshold: the 200 KB ones came from the heap
    assert _mapped("tune", env) >= 20  # each one mapped alone: unmapped, returned, when freed
    assert _mapped("tune", {**env, "MALLOC_MMAP_THRESHOLD_": "1048576"}) < 20  # glibc's own setting stands
