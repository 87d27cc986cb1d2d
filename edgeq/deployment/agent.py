"""The helper program that ``edgeq deploy`` runs on a board with the board's own Python.

It is sent as ``python3 -c SOURCE OP WORKDIR ...`` so nothing has to be installed
first, and it only uses the standard library (Python >= 3.7). Operations:

- ``probe WORKDIR`` prints what the board has (Python, machine, modules, the
  edgeq folder's manifest and installed wheel).
- ``recv WORKDIR RELPATH SHA256 file|tar`` reads a file (or a tar stream of a
  folder) from standard input, checks its hash, moves it into place atomically
  and records it in the sha256 manifest.
- ``setup WORKDIR WHEEL_RELPATH WHEEL_SHA EXTRA OFFLINE RUNTIME`` makes or reuses
  the venv (``--system-site-packages``) and installs the edgeq-device wheel sent
  with ``recv``, always with ``--no-index`` (never edgeq-device by name from an
  index); only the requirements listed in that wheel may come from the index.
  Then the venv's ``edgeq_device`` files must hash to the wheel's RECORD.

Errors are printed as one JSON object ``{"error", "kind", "fix"}`` and exit status 3.
"""

from __future__ import annotations

# Runs argv as a child and stops it when standard input closes: the host keeps the SSH
# session's stdin open while a command runs, so when the session goes away (Ctrl-C on the
# host, a time-out) the measurement on the board stops too instead of running on.
WATCH_SOURCE = r'''
import os, subprocess, sys, threading
child = subprocess.Popen(sys.argv[1:])


def watch():
    try:
        while os.read(0, 4096):  # unbuffered: no lock held at interpreter exit
            pass
    except OSError:
        pass
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()


threading.Thread(target=watch, daemon=True).start()
code = child.wait()
os._exit(code if code >= 0 else 128 - code)  # do not wait for the watcher's read
'''

SOURCE = r'''
import email.parser, fcntl, hashlib, importlib.util, json, os, platform, re, shutil, subprocess, sys, tarfile, tempfile
import zipfile

MODULES = ["numpy", "PIL", "flatbuffers", "click", "ai_edge_litert", "tflite_runtime", "tensorflow"]
DEPS = ["numpy", "PIL", "flatbuffers", "click"]
RUNTIMES = {"litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime", "tensorflow": "tensorflow"}


def fail(msg, kind, fix=""):
    sys.stdout.write(json.dumps({"error": msg, "kind": kind, "fix": fix}, allow_nan=False) + "\n")
    sys.exit(3)


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_sha(root):
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


def manifest_path(workdir):
    return os.path.join(workdir, "manifest.json")


def read_json(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def write_json(path, obj):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True, allow_nan=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def lock(workdir):
    fh = open(os.path.join(workdir, ".lock"), "w")
    fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


def find(mod):
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def venv_dir(workdir):
    return os.path.join(workdir, "venv")


def op_probe(workdir):
    info = {
        "python": sys.executable,
        "python_version": platform.python_version(),
        "machine": platform.machine(),
        "system": platform.system(),
        "hostname": platform.node(),
        "workdir": workdir,
        "in_venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix),
        "modules": {m: find(m) for m in MODULES},
        "venv_module": find("venv") and find("ensurepip"),
        "manifest": read_json(manifest_path(workdir)) or {},
        "install": read_json(os.path.join(venv_dir(workdir), "edgeq-install.json")),
    }
    sys.stdout.write(json.dumps(info, allow_nan=False) + "\n")


def op_recv(workdir, rel, sha, kind):
    os.makedirs(workdir, exist_ok=True)
    held = lock(workdir)
    dest = os.path.join(workdir, rel)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(dest), prefix=".recv-")
    try:
        if kind == "file":
            part = os.path.join(tmp, "data")
            with open(part, "wb") as fh:
                shutil.copyfileobj(sys.stdin.buffer, fh, 1 << 20)
                fh.flush()
                os.fsync(fh.fileno())
            got = file_sha(part)
        else:
            part = os.path.join(tmp, "tree")
            os.makedirs(part)
            with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tf:
                for member in tf:
                    name = member.name
                    if name.startswith("/") or ".." in name.split("/") or not (member.isfile() or member.isdir()):
                        fail("unsafe entry in the data archive: %r" % name, "remote")
                    tf.extract(member, part)
            got = tree_sha(part)
        if got != sha:
            fail("%s arrived with sha256 %s, expected %s" % (rel, got, sha), "transfer",
                 "the copy was corrupted or cut short; run again")
        old = None
        if os.path.exists(dest):
            old = dest + ".old-%d" % os.getpid()
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
    sys.stdout.write(json.dumps({"path": dest, "sha256": sha}, allow_nan=False) + "\n")


VERIFY = """
import base64, csv, hashlib, importlib.util, io, os, sys, zipfile
zf = zipfile.ZipFile(sys.argv[1])
record = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/RECORD")][0]
spec = importlib.util.find_spec("edgeq_device")
root = os.path.dirname(os.path.dirname(spec.origin)) if spec and spec.origin else ""
bad = []
for row in csv.reader(io.StringIO(zf.read(record).decode("utf-8"))):
    if not row or not row[0].startswith("edgeq_device/") or not row[1]:
        continue
    try:
        with open(os.path.join(root, row[0]), "rb") as fh:
            data = fh.read()
    except OSError:
        bad.append(row[0])
        continue
    if "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode() != row[1]:
        bad.append(row[0])
print(root)
print(" ".join(bad))
"""


def verify_installed(py, wheel):
    """Fail unless the venv imports edgeq_device with exactly the bytes of the shipped wheel."""
    res = subprocess.run([py, "-c", VERIFY, wheel], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = res.stdout.decode("utf-8", "replace").split("\n")
    if res.returncode != 0 or len(lines) < 2 or lines[1].strip():
        where = lines[0].strip() if lines and lines[0].strip() else "nowhere"
        differ = lines[1].strip() if len(lines) > 1 and lines[1].strip() else res.stderr.decode()[-200:]
        fail("the venv's edgeq_device (from %s) is not the shipped wheel: %s" % (where, differ), "setup",
             "remove %s on the board and deploy again" % os.path.dirname(os.path.dirname(py)))


def venv_check(py):
    code = ("import importlib.util as u, json; "
            "print(json.dumps({m: u.find_spec(m) is not None for m in %r}))" % (DEPS + list(RUNTIMES.values())))
    out = subprocess.run([py, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if out.returncode != 0:
        fail("the venv's python does not start: %s" % out.stderr.decode()[-300:], "setup")
    return json.loads(out.stdout.decode())


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_requirements(wheel, extra):
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

    def pick(m):
        return 'python_version >= "0"' if norm(m.group(1)) == norm(extra) else 'python_version < "0"'

    reqs = []
    for req in headers.get_all("Requires-Dist") or []:
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if name is None or norm(name.group(1)) == "edgeq-device":
            continue
        reqs.append(re.sub(r"""extra\s*==\s*["']([^"']*)["']""", pick, req))
    return reqs


def op_setup(workdir, wheel_rel, wheel_sha, extra, offline, runtime):
    os.makedirs(workdir, exist_ok=True)
    held = lock(workdir)
    venv = venv_dir(workdir)
    py = os.path.join(venv, "bin", "python")
    marker_path = os.path.join(venv, "edgeq-install.json")
    base = os.path.realpath(sys.executable)
    marker = read_json(marker_path)
    action = "reused"
    if marker is None or marker.get("base") != base or not os.path.exists(py):
        if not (find("venv") and find("ensurepip")):
            fail("%s cannot make a venv (no venv/ensurepip module)" % sys.executable, "no-venv",
                 "install it on the board (Debian/Raspberry Pi OS: sudo apt install python3-venv)")
        shutil.rmtree(venv, ignore_errors=True)
        made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if made.returncode != 0:
            fail("python -m venv failed: %s" % made.stdout.decode()[-400:], "no-venv",
                 "install python3-venv on the board")
        if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
            # The board's python is itself a venv: let ours see its packages too
            # (--system-site-packages only reaches the base interpreter's).
            import site
            parents = [p for p in site.getsitepackages() if os.path.isdir(p)]
            purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     stdout=subprocess.PIPE).stdout.decode().strip()
            with open(os.path.join(purelib, "_edgeq_parent_env.pth"), "w") as fh:
                fh.write("\n".join(parents) + "\n")
        marker = None
        action = "created"
    if action == "reused" and marker.get("wheel_sha") == wheel_sha and (
            not runtime or (marker.get("runtime") or {}).get("name") == runtime):
        # Same interpreter, same wheel, same runtime as last time: nothing to install.
        verify_installed(py, os.path.join(workdir, wheel_rel))
        held.close()
        sys.stdout.write(json.dumps({"venv": venv, "python": py, "action": "reused", "install": "none",
                                     "runtime": marker.get("runtime")}, allow_nan=False) + "\n")
        return
    have = venv_check(py)
    deps_missing = [m for m in DEPS if not have.get(m)]
    wanted = RUNTIMES.get(runtime) if runtime else None
    runtime_ok = have.get(wanted) if wanted else any(have.get(m) for m in RUNTIMES.values())
    install = "none"
    if marker is None or marker.get("wheel_sha") != wheel_sha or deps_missing or not runtime_ok:
        wheel = os.path.join(workdir, wheel_rel)
        pip = [py, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
        subprocess.run(pip + ["uninstall", "-y", "edgeq-device"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if not deps_missing and runtime_ok:
            cmd = pip + ["install", "--no-deps", "--no-index", "--force-reinstall", wheel]
            install = "no-deps"
        elif offline == "1":
            missing = deps_missing + ([] if runtime_ok else ["a TFLite runtime (%s)" % (
                wanted or " or ".join(RUNTIMES.values()))])
            fail("%s on the board lacks %s and the board is offline" % (sys.executable, ", ".join(missing)),
                 "no-runtime" if not runtime_ok else "missing-deps",
                 "install them on the board (pip install numpy pillow flatbuffers click ai-edge-litert, or apt "
                 "install python3-numpy python3-pil ...), point python= at a python that has them, or drop offline")
        else:
            # edgeq-device only ever from the shipped wheel file (--no-index); then pip fetches
            # just the requirements that wheel lists, never edgeq-device by its name.
            first = subprocess.run(pip + ["install", "--no-deps", "--no-index", "--force-reinstall", wheel],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if first.returncode != 0:
                fail("pip could not install the edgeq-device wheel: %s" % first.stdout.decode()[-300:], "setup")
            cmd = pip + ["install"] + wheel_requirements(wheel, extra)
            install = "resolved"
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if res.returncode != 0:
            tail = [ln for ln in res.stdout.decode("utf-8", "replace").splitlines() if ln.strip()][-3:]
            fail("pip could not install edgeq-device on the board: %s" % " | ".join(tail),
                 "no-runtime" if not runtime_ok else "setup",
                 "give the board internet access (pip), or install numpy, pillow, flatbuffers, click and "
                 "ai-edge-litert (or tflite-runtime) there first")
        if action == "reused":
            action = "updated"
    verify_installed(py, os.path.join(workdir, wheel_rel))
    check = ("import json, sys\n"
             "from edgeq_device.runtime import resolve_runtime\n"
             "r = resolve_runtime(sys.argv[1] or None)\n"
             "print(json.dumps({'name': r.name, 'version': r.version}))")
    res = subprocess.run([py, "-c", check, runtime or ""], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if res.returncode != 0:
        last = [ln for ln in res.stderr.decode("utf-8", "replace").splitlines() if ln.strip()][-1:]
        fail("no usable TFLite runtime on the board: %s" % (last[0] if last else "import failed"), "no-runtime",
             "install ai-edge-litert (or tflite-runtime with numpy<2) for %s on the board" % base)
    rt = json.loads(res.stdout.decode())
    write_json(marker_path, {"base": base, "wheel_sha": wheel_sha, "install": install if install != "none"
                             else (marker or {}).get("install", "unknown"), "runtime": rt})
    held.close()
    sys.stdout.write(json.dumps({"venv": venv, "python": py, "action": action, "install": install,
                                 "runtime": rt}, allow_nan=False) + "\n")


def main(argv):
    op, workdir = argv[0], os.path.abspath(os.path.expanduser(argv[1]))
    if op == "probe":
        op_probe(workdir)
    elif op == "recv":
        op_recv(workdir, *argv[2:5])
    elif op == "setup":
        op_setup(workdir, *argv[2:7])
    else:
        fail("unknown operation %r" % op, "remote")


main(sys.argv[1:])
'''
