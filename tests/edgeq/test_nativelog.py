"""quiet_native_logs: what C code writes to fd 2 goes to a log, Python's sys.stderr still reaches the terminal.

Each case runs in a fresh interpreter whose standard error is a pipe, as a terminal
would be: pytest's own capture would otherwise stand in for file descriptor 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def _run(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "EDGEQ_VERBOSE"}
    environ.update(env, TMPDIR=str(tmp_path))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=environ, timeout=60, cwd=tmp_path)


def test_fd2_goes_to_the_log_and_sys_stderr_to_the_terminal(tmp_path: Path) -> None:
    proc = _run("""
        import os, sys
        from edgeq.nativelog import quiet_native_logs
        with quiet_native_logs("native.log") as path:
            os.write(2, b"I0000 native line\\n")
            print("python line", file=sys.stderr)
            with quiet_native_logs() as inner:  # nested: the same redirection
                os.write(2, b"nested native line\\n")
                assert inner == path
        os.write(2, b"after the block\\n")
        print(path)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["python line", "after the block"]
    assert (tmp_path / "native.log").read_text() == "I0000 native line\nnested native line\n"
    assert proc.stdout.strip() == "native.log"


def test_temporary_log_deleted_unless_an_unexpected_error(tmp_path: Path) -> None:
    proc = _run("""
        import os, sys
        from edgeq.errors import ConversionError
        from edgeq.nativelog import quiet_native_logs
        with quiet_native_logs() as path:
            os.write(2, b"native\\n")
        print(path.exists())
        try:
            with quiet_native_logs() as path:
                os.write(2, b"native\\n")
                raise ConversionError("the converter failed", argument="model")
        except ConversionError:
            print(path.exists())
        with quiet_native_logs() as path:
            os.write(2, b"native before the crash\\n")
            raise RuntimeError("bug")
    """, tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.split() == ["False", "False"]
    logs = list(tmp_path.glob("edgeq-tf-*.log"))
    assert len(logs) == 1 and logs[0].read_text() == "native before the crash\n"
    assert f"TensorFlow's native log: {logs[0]}" in proc.stderr
    assert "RuntimeError: bug" in proc.stderr


def test_verbose_redirects_nothing(tmp_path: Path) -> None:
    code = """
        import os
        from edgeq.nativelog import quiet_native_logs, show_native_logs
        with show_native_logs(), quiet_native_logs() as path:
            os.write(2, b"shown\\n")
            assert path is None
    """
    proc = _run(code, tmp_path)
    assert proc.returncode == 0 and proc.stderr == "shown\n"
    proc = _run(code.replace("show_native_logs(), ", ""), tmp_path, EDGEQ_VERBOSE="1")
    assert proc.returncode == 0 and proc.stderr == "shown\n"
    assert not list(tmp_path.glob("edgeq-tf-*.log"))


def test_no_fd2_means_nothing_to_redirect(tmp_path: Path) -> None:
    proc = _run("""
        import os
        from edgeq.nativelog import quiet_native_logs
        os.close(2)
        with quiet_native_logs() as path:
            print(path)
    """, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "None"


def test_blocks_reuse_one_stream_to_the_terminal(tmp_path: Path) -> None:
    proc = _run("""
        import os, sys
        from edgeq.nativelog import quiet_native_logs
        streams = set()
        for i in range(3):
            with quiet_native_logs("native.log"):
                streams.add(id(sys.stderr))
                print(f"python {i}", file=sys.stderr)
        print(len(streams))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.split() == ["python", "0", "python", "1", "python", "2"]
    assert proc.stdout.strip() == "1"
