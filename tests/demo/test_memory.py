"""The server's malloc settings: capped arenas and trimming work where glibc is, and are
skipped cleanly elsewhere or when the environment already says how many arenas."""
import subprocess
import sys

from demo import memory


def test_arena_cap_and_trim_run_in_a_fresh_process():
    code = ("from demo import memory; import sys; "
            "ok = memory.cap_malloc_arenas(); blob = [bytearray(1 << 20) for _ in range(64)]; del blob; "
            "print(ok, memory.trim_free_memory() in (True, False))")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "."}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    has_glibc = memory._libc() is not None
    assert out.stdout.split() == [str(has_glibc), "True"]


def test_an_explicit_malloc_arena_max_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert memory.cap_malloc_arenas() is False


def test_without_glibc_nothing_is_called(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr(memory, "_libc", lambda: None)  # the cached lookup is replaced, not cleared
    assert memory.cap_malloc_arenas() is False and memory.trim_free_memory() is False
    stop = memory.start_trimmer(0.01)
    stop.set()
