"""The helper program that ``edgeq deploy`` runs on a board with the board's own Python.

The host sends this file's text as ``python3 -c TEXT OP WORKDIR ...`` (standard
input stays free for the bytes ``recv`` reads), so nothing has to be installed
first. It uses only the standard library and runs on Python >= 3.7: no
``X | Y`` outside annotations, no ``match``, no walrus. Locally it runs as
``python agent.py probe DIR``. Operations:

- ``probe WORKDIR`` prints what the board has (Python, machine, modules, the
  edgeq folder's manifest and installed wheel).
- ``recv WORKDIR RELPATH SHA256 file|tar`` reads a file (or a tar stream of a
  folder) from standard input, checks its hash, moves it into place atomically
  and records it in the sha256 manifest.
- ``setup WORKDIR WHEEL_RELPATH WHEEL_SHA EXTRA OFFLINE RUNTIME`` makes or reuses
  the venv (``--system-site-packages``) and installs the edgeq-device wheel sent
  with ``recv`` (by the board's own pip when it is 22.3 or newer, ``pip --python
  VENV``: the venv is then made without pip, skipping ensurepip's seconds),
  always with ``--no-index`` (never edgeq-device by name from an index); only
  the requirements listed in that wheel may come from the index.
  Then the venv's ``edgeq_device`` files must hash to the wheel's RECORD.

Each prints one JSON object on standard output. Errors are printed as one JSON
object ``{"error", "kind", "fix"}`` and exit status 3; ``kind`` is one of
:data:`edgeq.errors.DEPLOY_ERROR_KINDS`.
"""

from __future__ import annotations

import base64
import csv
import email.parser
import errno
import functools
import hashlib
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import site
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from typing import IO, Any, Dict, List, NoReturn, Sequence

MODULES = ["numpy", "PIL", "flatbuffers", "click", "ai_edge_litert", "tflite_runtime", "tensorflow"]
DEPS = ["numpy", "PIL", "flatbuffers", "click"]
RUNTIMES = {"litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime", "tensorflow": "tensorflow"}
EXIT_FAILED = 3

# One-line questions put to the venv's python (it is another interpreter than this one).
_ASK_DEPS = "import importlib.util as u, json, sys; print(json.dumps({m: u.find_spec(m) is not None for m in sys.argv[1:]}))"
_ASK_PACKAGE = "import importlib.util as u; s = u.find_spec('edgeq_device'); print(s.origin if s and s.origin else '')"
_ASK_PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
_ASK_RUNTIME = ("import json, sys; from edgeq_device import resolve_runtime; "
                "r = resolve_runtime(sys.argv[1] or None); print(json.dumps({'name': r.name, 'version': r.version}))")


def fail(msg: str, kind: str, fix: str = "") -> NoReturn:
    """Print the error object and exit with status 3."""
    sys.stdout.write(json.dumps({"error": msg, "kind": kind, "fix": fix}, allow_nan=False) + "\n")
    sys.exit(EXIT_FAILED)


def say(obj: Dict[str, Any]) -> None:
    """Print an operation's answer: one JSON line."""
    sys.stdout.write(json.dumps(obj, allow_nan=False) + "\n")


def file_sha(path: str) -> str:
    """sha256 of a file (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_sha(root: str) -> str:
    """sha256 over a folder: relative paths, file hashes and empty folders, sorted (as the host computes it)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if not dirnames and not filenames and dirpath != root:  # an empty class folder is data too
            rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
            h.update(rel.encode("utf-8") + b"/\0dir\n")
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            h.update(rel.encode("utf-8") + b"\0" + file_sha(full).encode("ascii") + b"\n")
    return h.hexdigest()


def manifest_path(workdir: str) -> str:
    return os.path.join(workdir, "manifest.json")


def read_json(path: str) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (temporary file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True, allow_nan=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def lock(workdir: str, shared: bool = False) -> IO[str]:
    """Hold the workdir's lock until the returned file is closed (one deploy at a time per board user).

    ``shared``: only reading (checking a venv already made): many such readers at once, none while a
    writer holds it.
    """
    fh = open(os.path.join(workdir, ".lock"), "w")
    import fcntl  # the board is POSIX; the host imports this module for the hashes only

    fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    return fh


def find(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def venv_dir(workdir: str) -> str:
    return os.path.join(workdir, "venv")


def op_probe(workdir: str) -> None:
    """Print this Python, the machine, which modules it has, and the workdir's manifest and install."""
    say({
        "python": sys.executable,
        "python_version": platform.python_version(),
        "machine": platform.machine(),
        "system": platform.system(),
        "hostname": platform.node(),
        "workdir": workdir,
        "in_venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix),
        "modules": {m: find(m) for m in MODULES},
        "venv_module": find("venv") and (find("ensurepip") or own_pip()),
        "manifest": read_json(manifest_path(workdir)) or {},
        "install": read_json(os.path.join(venv_dir(workdir), "edgeq-install.json")),
    })


def _receive_file(part: str) -> str:
    with open(part, "wb") as fh:
        shutil.copyfileobj(sys.stdin.buffer, fh, 1 << 20)
        fh.flush()
        os.fsync(fh.fileno())
    return file_sha(part)


def _receive_tree(part: str) -> str:
    os.makedirs(part)
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tf:
        for member in tf:
            name = member.name
            if name.startswith("/") or ".." in name.split("/") or not (member.isfile() or member.isdir()):
                fail(f"unsafe entry in the data archive: {name!r}", "remote")
            tf.extract(member, part)
    return tree_sha(part)


def op_recv(workdir: str, rel: str, sha: str, kind: str) -> None:
    """Read a file (``kind`` "file") or a tar of a folder ("tar") from stdin into ``workdir/rel``."""
    os.makedirs(workdir, exist_ok=True)
    held = lock(workdir)
    dest = os.path.join(workdir, rel)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(dest), prefix=".recv-")
    try:
        if kind == "file":
            part = os.path.join(tmp, "data")
            got = _receive_file(part)
        else:
            part = os.path.join(tmp, "tree")
            got = _receive_tree(part)
        if got != sha:
            fail(f"{rel} arrived with sha256 {got}, expected {sha}", "transfer",
                 "the copy was corrupted or cut short; run again")
        old = None
        if os.path.exists(dest):
            old = f"{dest}.old-{os.getpid()}"
            os.rename(dest, old)
        os.rename(part, dest)
        if old:
            (shutil.rmtree if os.path.isdir(old) else os.unlink)(old)
        man = read_json(manifest_path(workdir)) or {}
        man[rel] = sha
        write_json(manifest_path(workdir), man)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        held.close()
    say({"path": dest, "sha256": sha})


def record_mismatches(root: str, wheel: str) -> List[str]:
    """The ``edgeq_device/`` files of the wheel's RECORD whose bytes under ``root`` differ (or are missing)."""
    with zipfile.ZipFile(wheel) as zf:
        record = next(n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/RECORD"))
        rows = list(csv.reader(io.StringIO(zf.read(record).decode("utf-8"))))
    bad = []
    for row in rows:
        if not row or not row[0].startswith("edgeq_device/") or not row[1]:
            continue
        try:
            with open(os.path.join(root, row[0]), "rb") as fh:
                data = fh.read()
        except OSError:
            bad.append(row[0])
            continue
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if "sha256=" + digest != row[1]:
            bad.append(row[0])
    return bad


def verify_installed(py: str, wheel: str) -> None:
    """Fail unless the venv imports edgeq_device with exactly the bytes of the shipped wheel."""
    res = subprocess.run([py, "-c", _ASK_PACKAGE], capture_output=True)
    origin = res.stdout.decode("utf-8", "replace").strip() if res.returncode == 0 else ""
    root = os.path.dirname(os.path.dirname(origin)) if origin else ""
    bad = record_mismatches(root, wheel) if root else []
    if not root or bad:
        differ = " ".join(bad) if bad else (res.stderr.decode("utf-8", "replace")[-200:]
                                            or "edgeq_device is not importable")
        fail(f"the venv's edgeq_device (from {root or 'nowhere'}) is not the shipped wheel: {differ}", "setup",
             f"remove {os.path.dirname(os.path.dirname(py))} on the board and deploy again")


def venv_check(py: str) -> Dict[str, bool]:
    """Which of the requirements and runtimes the venv's python finds."""
    out = subprocess.run([py, "-c", _ASK_DEPS, *DEPS, *RUNTIMES.values()],
                         capture_output=True)
    if out.returncode != 0:
        fail(f"the venv's python does not start: {out.stderr.decode()[-300:]}", "setup")
    found: Dict[str, bool] = json.loads(out.stdout.decode())
    return found


def norm(name: str) -> str:
    """A distribution name in its normalized form (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_requirements(wheel: str, extra: str) -> List[str]:
    """The Requires-Dist of the wheel's METADATA for EXTRA, as pip command-line requirements.

    A marker ``extra == "X"`` becomes always true for the chosen extra and always false for
    the others; pip evaluates the rest of each marker on this board. edgeq-device itself is
    never among them.
    """
    with zipfile.ZipFile(wheel) as zf:
        meta = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(meta) != 1:
            fail("the edgeq-device wheel has no METADATA", "setup", "deploy again")
        headers = email.parser.HeaderParser().parsestr(zf.read(meta[0]).decode("utf-8"))

    def pick(m: Any) -> str:
        return 'python_version >= "0"' if norm(m.group(1)) == norm(extra) else 'python_version < "0"'

    reqs = []
    for req in headers.get_all("Requires-Dist") or []:
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if name is None or norm(name.group(1)) == "edgeq-device":
            continue
        reqs.append(re.sub(r"""extra\s*==\s*["']([^"']*)["']""", pick, req))
    return reqs


@functools.lru_cache(maxsize=None)  # noqa: UP033 (boards run Python >= 3.7: no functools.cache)
def own_pip() -> bool:
    """True when this python's pip can install into another interpreter (``pip --python``, pip >= 22.3).

    Asked once per run (probe, venv and install all consult it)."""
    try:
        from importlib.metadata import version  # Python >= 3.8
        parts = re.match(r"(\d+)\.(\d+)", version("pip"))
    except Exception:  # no pip, or Python 3.7
        return False
    return parts is not None and (int(parts.group(1)), int(parts.group(2))) >= (22, 3)


def pip_command(py: str) -> List[str]:
    """pip for the venv of ``py``: this python's own pip aimed at it when it can, else the venv's pip."""
    head = [sys.executable, "-m", "pip", "--python", py] if own_pip() else [py, "-m", "pip"]
    return [*head, "--disable-pip-version-check", "--no-input", "-q"]


def make_venv(venv: str, py: str) -> None:
    """A fresh venv with ``--system-site-packages`` (and this venv's packages when the board's python is one).

    Made without pip when this python's pip can install into it (:func:`pip_command`): ensurepip
    takes seconds on a Pi (over ten under emulation) for a pip nothing else would use.
    """
    with_pip = not own_pip()
    if not find("venv") or (with_pip and not find("ensurepip")):
        fail(f"{sys.executable} cannot make a venv (no venv/ensurepip module)", "no-venv",
             "install it on the board (Debian/Raspberry Pi OS: sudo apt install python3-venv)")
    shutil.rmtree(venv, ignore_errors=True)
    made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv]
                          + ([] if with_pip else ["--without-pip"]),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if made.returncode != 0:
        fail(f"python -m venv failed: {made.stdout.decode()[-400:]}", "no-venv", "install python3-venv on the board")
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        # The board's python is itself a venv: let ours see its packages too
        # (--system-site-packages only reaches the base interpreter's).
        parents = [p for p in site.getsitepackages() if os.path.isdir(p)]
        purelib = subprocess.run([py, "-c", _ASK_PURELIB], stdout=subprocess.PIPE).stdout.decode().strip()
        with open(os.path.join(purelib, "_edgeq_parent_env.pth"), "w") as fh:
            fh.write("\n".join(parents) + "\n")


def install_wheel(py: str, wheel: str, extra: str, offline: str, deps_missing: Sequence[str], runtime_ok: bool,
                  wanted: str | None, fresh: bool = False) -> str:
    """Install the shipped wheel into the venv; returns how (``no-deps`` or ``resolved``).

    ``fresh``: the venv was just made, so there is no older edgeq-device to remove first (one pip
    start fewer: seconds on a Pi 3 or under emulation).
    """
    pip = pip_command(py)
    if not fresh:
        subprocess.run([*pip, "uninstall", "-y", "edgeq-device"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if not deps_missing and runtime_ok:
        cmd = [*pip, "install", "--no-deps", "--no-index", "--force-reinstall", wheel]
        install = "no-deps"
    elif offline == "1":
        runtimes = wanted or " or ".join(RUNTIMES.values())
        missing = list(deps_missing) + ([] if runtime_ok else [f"a TFLite runtime ({runtimes})"])
        fail(f"{sys.executable} on the board lacks {', '.join(missing)} and the board is offline",
             "no-runtime" if not runtime_ok else "missing-deps",
             "install them on the board (pip install numpy pillow flatbuffers click ai-edge-litert, or apt "
             "install python3-numpy python3-pil ...), point python= at a python that has them, or drop offline")
    else:
        # edgeq-device only ever from the shipped wheel file (--no-index); then pip fetches
        # just the requirements that wheel lists, never edgeq-device by its name.
        first = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--force-reinstall", wheel],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if first.returncode != 0:
            fail(f"pip could not install the edgeq-device wheel: {first.stdout.decode()[-300:]}", "setup")
        cmd = [*pip, "install", *wheel_requirements(wheel, extra)]
        install = "resolved"
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        tail = [ln for ln in res.stdout.decode("utf-8", "replace").splitlines() if ln.strip()][-3:]
        fail(f"pip could not install edgeq-device on the board: {' | '.join(tail)}",
             "no-runtime" if not runtime_ok else "setup",
             "give the board internet access (pip), or install numpy, pillow, flatbuffers, click and "
             "ai-edge-litert (or tflite-runtime) there first")
    return install


def resolved_runtime(py: str, runtime: str, base: str) -> Dict[str, Any]:
    """The TFLite runtime the venv's edgeq_device picks (``{"name", "version"}``)."""
    res = subprocess.run([py, "-c", _ASK_RUNTIME, runtime or ""], capture_output=True)
    if res.returncode != 0:
        last = [ln for ln in res.stderr.decode("utf-8", "replace").splitlines() if ln.strip()][-1:]
        fail(f"no usable TFLite runtime on the board: {last[0] if last else 'import failed'}", "no-runtime",
             f"install ai-edge-litert (or tflite-runtime with numpy<2) for {base} on the board")
    found: Dict[str, Any] = json.loads(res.stdout.decode())
    return found


def op_setup(workdir: str, wheel_rel: str, wheel_sha: str, extra: str, offline: str, runtime: str) -> None:
    """Make or reuse the venv and install the shipped wheel in it; print what was done."""
    os.makedirs(workdir, exist_ok=True)
    venv = venv_dir(workdir)
    py = os.path.join(venv, "bin", "python")
    wheel = os.path.join(workdir, wheel_rel)
    marker_path = os.path.join(venv, "edgeq-install.json")
    base = os.path.realpath(sys.executable)
    # The common case, a venv made before with this wheel: checked under a shared lock, so many
    # deploys sharing one home folder check it at once.
    held = lock(workdir, shared=True)
    marker = read_json(marker_path)
    if marker is not None and marker.get("base") == base and os.path.exists(py) \
            and marker.get("wheel_sha") == wheel_sha and (
            not runtime or (marker.get("runtime") or {}).get("name") == runtime):
        try:
            verify_installed(py, wheel)
        finally:
            held.close()
        say({"venv": venv, "python": py, "action": "reused", "install": "none", "runtime": marker.get("runtime")})
        return
    held.close()
    held = lock(workdir)
    marker = read_json(marker_path)
    action = "reused"
    if marker is None or marker.get("base") != base or not os.path.exists(py):
        make_venv(venv, py)
        marker = None
        action = "created"
    if marker is not None and marker.get("wheel_sha") == wheel_sha and (
            not runtime or (marker.get("runtime") or {}).get("name") == runtime):
        # Same interpreter, same wheel, same runtime as last time: nothing to install.
        verify_installed(py, wheel)
        held.close()
        say({"venv": venv, "python": py, "action": "reused", "install": "none", "runtime": marker.get("runtime")})
        return
    have = venv_check(py)
    deps_missing = [m for m in DEPS if not have.get(m)]
    wanted = RUNTIMES.get(runtime) if runtime else None
    runtime_ok = bool(have.get(wanted)) if wanted else any(have.get(m) for m in RUNTIMES.values())
    install = "none"
    if marker is None or marker.get("wheel_sha") != wheel_sha or deps_missing or not runtime_ok:
        install = install_wheel(py, wheel, extra, offline, deps_missing, runtime_ok, wanted,
                                fresh=action == "created")
        if action == "reused":
            action = "updated"
    verify_installed(py, wheel)
    rt = resolved_runtime(py, runtime, base)
    write_json(marker_path, {"base": base, "wheel_sha": wheel_sha, "install": install if install != "none"
                             else (marker or {}).get("install", "unknown"), "runtime": rt})
    held.close()
    say({"venv": venv, "python": py, "action": action, "install": install, "runtime": rt})


_ARITY = {"probe": 0, "recv": 3, "setup": 5}


def main(argv: Sequence[str]) -> None:
    """Run one operation: ``probe WORKDIR``, ``recv WORKDIR REL SHA KIND``, ``setup WORKDIR ...``."""
    if len(argv) < 2 or argv[0] not in _ARITY or len(argv) != 2 + _ARITY[argv[0]]:
        fail(f"unknown operation or wrong arguments: {' '.join(argv)!r}", "remote",
             "use probe WORKDIR | recv WORKDIR RELPATH SHA256 file|tar | "
             "setup WORKDIR WHEEL_RELPATH WHEEL_SHA EXTRA OFFLINE RUNTIME")
    op, workdir = argv[0], os.path.abspath(os.path.expanduser(argv[1]))
    try:
        if op == "probe":
            op_probe(workdir)
        elif op == "recv":
            op_recv(workdir, argv[2], argv[3], argv[4])
        else:
            op_setup(workdir, argv[2], argv[3], argv[4], argv[5], argv[6])
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fail(f"no space left on the board's disk under {workdir} ({os.strerror(exc.errno)})", "no-space",
                 "free space on the board, or give it a workdir on a bigger disk (workdir = / edgeq_workdir)")
        raise


if __name__ == "__main__":
    main(sys.argv[1:])
