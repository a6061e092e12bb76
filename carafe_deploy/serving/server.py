"""A real Triton Inference Server on this machine, from PyPI: install it, start it on a repository, stop it.

The server is the ``tritonserver`` binary inside the ``nvidia-pytriton`` wheel (Triton 2.51.0, NGC release 24.10),
which has one backend: Python. It lives in its own virtual environment (the *server environment*), apart from the
project's, because that Python backend's stub works only with numpy < 2: under numpy 2 it hands the models wrong
input values without an error. The Python models of a repository run in the server environment (numpy<2,
onnxruntime, pillow); clients run anywhere.

* :func:`install_server` makes the environment (``carafe-deploy serve --install``);
* :func:`find_server` locates it (``MissingDependencyError`` with the one command to run when it is not there);
* :class:`TritonServer` starts ``tritonserver`` on free (or given) ports, waits until the models have loaded, and
  stops it (SIGTERM, then SIGKILL of its process group), removing its shared-memory files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeployError, MissingDependencyError

__all__ = ["ENV_VAR", "PYTRITON", "SERVER_PACKAGES", "ServerInstall", "default_env", "find_server", "install_server",
           "TritonServer", "install_hint"]

ENV_VAR = "CARAFE_DEPLOY_TRITON_ENV"
# Pinned: the launcher knows this wheel's layout (bin/, backends/python, python_backend_stubs/3.X) and Triton 2.51's
# behaviour; a later wheel needs the same checks again (docs/SERVING.md).
PYTRITON = "nvidia-pytriton==0.7.0"
# What the Python models import. numpy<2: the wheel's stubs were built before numpy 2 (see the module docstring).
SERVER_PACKAGES = ("numpy<2", "onnxruntime", "pillow")
_MARKER = "carafe-deploy-server.json"


def default_env() -> Path:
    """``$CARAFE_DEPLOY_TRITON_ENV``, else ``~/.cache/carafe-deploy/triton-server``."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "carafe-deploy" / "triton-server"


def install_hint(env: Path | None = None) -> str:
    where = "" if env is None or env == default_env() else f" --server-env {env}"
    return (f"carafe-deploy serve --install{where} (a virtual environment with {PYTRITON}'s tritonserver, "
            f"{', '.join(SERVER_PACKAGES)}; about 300 MB)")


@dataclass(frozen=True)
class ServerInstall:
    """A server environment: its folder, the Triton tree inside the wheel, the stub for its Python."""

    env: Path
    tree: Path  # <site-packages>/pytriton/tritonserver
    python_version: str  # "3.11": the Python backend stub must be this one
    libdir: str  # where its libpython3.X.so lives (the stub links it)

    @property
    def binary(self) -> Path:
        return self.tree / "bin" / "tritonserver"

    @property
    def stub(self) -> Path:
        return self.tree / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"


def find_server(env: Path | None = None) -> ServerInstall:
    """The server environment at ``env`` (default :func:`default_env`); ``MissingDependencyError`` saying how to
    make it when it is missing or incomplete."""
    env = Path(env) if env else default_env()
    python = env / "bin" / "python3"
    trees = sorted(env.glob("lib/python3*/site-packages/pytriton/tritonserver"))
    if not (env / _MARKER).is_file() or not python.exists() or not trees:
        state = "is incomplete" if env.exists() else "does not exist"
        raise MissingDependencyError(f"no Triton server: {env} {state}; install it with {install_hint(env)}")
    info = json.loads((env / _MARKER).read_text())
    install = ServerInstall(env, trees[0], info["python"], info["libdir"])
    for path in (install.binary, install.stub):
        if not path.is_file():
            raise MissingDependencyError(f"{path} is missing from the server environment; reinstall it with "
                                         f"{install_hint(env)}")
    return install


def _run(cmd, log, what: str) -> None:
    log(f"$ {' '.join(map(str, cmd))}")
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise DeployError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def install_server(env: Path | None = None, python: str | None = None, log=print) -> ServerInstall:
    """Make the server environment at ``env``: a virtual environment of ``python`` (default: this interpreter) with
    the ``nvidia-pytriton`` wheel (for its server binary only, hence ``--no-deps``) and :data:`SERVER_PACKAGES`.
    An existing complete one is kept; an incomplete one (an interrupted install) is made again."""
    env = Path(env) if env else default_env()
    try:
        return find_server(env)
    except MissingDependencyError:
        pass
    if env.exists():
        if not (env / "pyvenv.cfg").is_file():
            raise DeployError(f"{env} exists and is not a virtual environment; choose another --server-env")
        shutil.rmtree(env)  # an interrupted install: no marker yet
    env.parent.mkdir(parents=True, exist_ok=True)
    base = python or getattr(sys, "_base_executable", None) or sys.executable
    _run([base, "-m", "venv", env], log, "creating the virtual environment")
    py = env / "bin" / "python3"
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "--no-deps", PYTRITON], log, f"installing {PYTRITON}")
    _run([*pip, *SERVER_PACKAGES], log, "installing the Python models' packages")
    probe = subprocess.run([str(py), "-c", "import sys, sysconfig; print('%d.%d' % sys.version_info[:2]); "
                            "print(sysconfig.get_config_var('LIBDIR') or '')"], capture_output=True, text=True,
                           check=True).stdout.split("\n")
    info = {"pytriton": PYTRITON, "packages": list(SERVER_PACKAGES), "python": probe[0], "libdir": probe[1]}
    trees = sorted(env.glob("lib/python3*/site-packages/pytriton/tritonserver"))
    if not trees:
        raise DeployError(f"{PYTRITON} installed no pytriton/tritonserver tree in {env}")
    stub = trees[0] / "python_backend_stubs" / info["python"] / "triton_python_backend_stub"
    if not stub.is_file():
        raise DeployError(f"{PYTRITON} has no Python-backend stub for Python {info['python']} (it has "
                          f"{', '.join(sorted(p.name for p in stub.parent.parent.iterdir()))}): make the environment "
                          "with one of those (--python)")
    missing = _missing_libraries(stub, info["libdir"])
    if missing:
        raise DeployError(f"the Python-backend stub cannot load {', '.join(missing)} (it needs a Python built with "
                          "a shared libpython): make the environment with another Python (--python)")
    (env / _MARKER).write_text(json.dumps(info, indent=2) + "\n")
    log(f"Triton server environment ready: {env}")
    return find_server(env)


def _missing_libraries(binary: Path, libdir: str) -> list[str]:
    """Shared libraries ``binary`` needs that the loader cannot find (``ldd``); a stub that cannot start makes
    Triton 2.51 wait for it for ever, so this is checked before the server is started."""
    if shutil.which("ldd") is None:
        return []
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)}
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env).stdout
    return [line.split()[0] for line in out.splitlines() if "not found" in line]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` ports free right now (another process can take one before the server binds it: retried)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _status(url: str, data: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def python_models_without_model_py(repository: Path) -> list[str]:
    """Python-backend models of ``repository`` with a version folder that has no model.py (Triton 2.51 waits for
    such a model for ever instead of failing it)."""
    bad = []
    for config in sorted(Path(repository).glob("*/config.pbtxt")):
        if not re.search(r'^\s*backend:\s*"python"', config.read_text(), re.MULTILINE):
            continue
        versions = [d for d in config.parent.iterdir() if d.is_dir() and d.name.isdigit()]
        if not versions or any(not (d / "model.py").is_file() for d in versions):
            bad.append(config.parent.name)
    return bad


class TritonServer:
    """``tritonserver`` on ``repository`` (a folder, or a list of them), as a context manager or with
    :meth:`start` / :meth:`stop`.

    ``models``: load only these (explicit model control; each must become ready, else :meth:`start` fails with the
    server's reason); ``None`` loads every model and keeps serving those that loaded (the others are listed by
    :meth:`models`). Ports left ``None`` are picked free. The server's log goes to ``log_path`` (default: a file in
    its temporary folder, removed on stop unless given).
    """

    def __init__(self, repository, *, install: ServerInstall | None = None, models=None, host: str = "127.0.0.1",
                 http_port: int | None = None, grpc_port: int | None = None, metrics_port: int | None = None,
                 log_path=None, timeout: float = 120.0, exit_timeout: int = 5, extra_args=()):
        many = isinstance(repository, (list, tuple))
        self.repositories = [Path(r).resolve() for r in (repository if many else [repository])]
        self.repository = self.repositories[0]
        self.install = install
        self.models_to_load = list(models) if models is not None else None
        self.host = host
        self.ports = (http_port, grpc_port, metrics_port)
        self.log_path = Path(log_path) if log_path else None
        self._user_log = log_path is not None
        self.timeout = timeout
        self.exit_timeout = exit_timeout
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.http_port = self.grpc_port = self.metrics_port = None
        self._work: Path | None = None
        self._shm_prefix = f"carafe_triton_{uuid.uuid4().hex[:10]}_"
        self.unload_cut_short = False  # set by stop(): the server's exit timeout ran out while models unloaded

    # endpoints ----------------------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self._client_host()}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host()}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host()}:{self.metrics_port}/metrics"

    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    # lifecycle ----------------------------------------------------------------------------------------------
    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "TritonServer":
        for repository in self.repositories:
            if not repository.is_dir():
                raise DeployError(f"model repository {repository} is not a folder")
        self._check_ports()
        bad = [m for r in self.repositories for m in python_models_without_model_py(r)]
        if bad:
            raise DeployError(f"Python model(s) {', '.join(bad)} lack a version folder with model.py (Triton 2.51 "
                              "would wait for such a model for ever)")
        install = self.install or find_server()
        missing = _missing_libraries(install.stub, install.libdir)
        if missing:
            raise DeployError(f"the Python-backend stub {install.stub} cannot load {', '.join(missing)}")
        self._work = Path(tempfile.mkdtemp(prefix="carafe-triton-"))
        backends = self._work / "backends" / "python"
        backends.mkdir(parents=True)
        # symlinks, not copies: the stub finds Triton's libraries through its RPATH ($ORIGIN of the real file)
        for source in (install.tree / "backends" / "python" / "libtriton_python.so",
                       install.tree / "backends" / "python" / "triton_python_backend_utils.py", install.stub):
            (backends / source.name).symlink_to(source)
        pick = any(p is None for p in self.ports)
        try:
            for attempt in range(3 if pick else 1):
                free = iter(free_ports(3, self.host if self.host not in ("0.0.0.0", "") else "127.0.0.1"))
                self.http_port, self.grpc_port, self.metrics_port = (p if p is not None else next(free)
                                                                     for p in self.ports)
                log = self.log_path or self._work / f"tritonserver{attempt}.log"
                self._launch(install, log)
                try:
                    self._wait_ready(log)
                    self.log_path = log
                    return self
                except _PortInUse:
                    if not pick or attempt == 2:  # one line: the log's own
                        taken = [line.strip() for line in log.read_text(errors="replace").splitlines()
                                 if "already in use" in line]
                        raise DeployError(f"a port is in use: {taken[-1] if taken else 'see the log'}") from None
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def _check_ports(self) -> None:
        """The ports given: each a TCP port, no two the same, each free on ``host`` now (``DeployError`` naming it,
        one line, before the server starts; Triton would say so only in its log, or not at all)."""
        given = {kind: p for kind, p in zip(_PORT_KINDS, self.ports) if p is not None}
        for kind, p in given.items():
            if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 65535:
                raise DeployError(f"the {kind} port {p!r} is not a TCP port (1 to 65535)")
        seen: dict[int, str] = {}
        for kind, p in given.items():
            if p in seen:
                raise DeployError(f"the {seen[p]} and {kind} ports are both {p}: give each its own port")
            seen[p] = kind
        host = self.host if self.host not in ("0.0.0.0", "") else "127.0.0.1"
        for kind, p in given.items():
            with socket.socket() as probe:
                # as the server binds: a port a closed connection still holds (TIME_WAIT) is free to it
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, p))
                except OSError as exc:
                    raise DeployError(f"the {kind} port {p} cannot be used on {host} ({exc.strerror or exc}; "
                                      "another server?): choose another port") from None

    def _launch(self, install: ServerInstall, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
        # the Python models run in the server environment: the stub's Python is the first python3 on PATH
        env["PATH"] = f"{install.env / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (install.libdir, env.get("LD_LIBRARY_PATH")) if p)
        cmd = [str(install.binary), *[f"--model-repository={r}" for r in self.repositories],
               f"--backend-directory={self._work / 'backends'}", f"--cache-directory={install.tree / 'caches'}",
               f"--http-address={self.host}", f"--grpc-address={self.host}", f"--metrics-address={self.host}",
               f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
               # keep serving the models that load; readiness is judged per model below
               "--exit-on-error=false", "--strict-readiness=false", "--disable-auto-complete-config",
               # bounds the wait for in-flight requests and idle keep-alive connections at shutdown (default 30 s)
               f"--exit-timeout-secs={self.exit_timeout}",
               f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}"]
        if self.models_to_load is not None:
            cmd += ["--model-control-mode=explicit", *[f"--load-model={m}" for m in self.models_to_load]]
        cmd += self.extra_args
        self.command = cmd
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True,  # its own group: Ctrl-C reaches us, we stop it
                                         preexec_fn=_stop_with_parent)

    def _wait_ready(self, log: Path) -> None:
        deadline = time.monotonic() + self.timeout
        base = f"http://{self.http_url}"
        while True:
            if self.proc.poll() is not None:
                text = log.read_text(errors="replace")
                if "already in use" in text:
                    raise _PortInUse()
                raise DeployError(self._failure(log, f"tritonserver exited with status {self.proc.returncode}"))
            if _status(f"{base}/v2/health/ready")[0] == 200:
                break
            if time.monotonic() > deadline:
                self._kill()
                raise DeployError(self._failure(log, f"tritonserver was not ready after {self.timeout:.0f} s"))
            time.sleep(0.1)
        # the metrics service starts after HTTP: a taken metrics port shows only now, as an exit
        while _status(self.metrics_url)[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                if self.proc.poll() is not None and "already in use" in log.read_text(errors="replace"):
                    raise _PortInUse()
                raise DeployError(self._failure(log, "the metrics endpoint did not come up"))
            time.sleep(0.1)
        if self.models_to_load is not None:
            states = {m["name"]: m for m in self.models()}
            failed = [f"{name}: {states.get(name, {}).get('reason') or states.get(name, {}).get('state', 'absent')}"
                      for name in self.models_to_load if states.get(name, {}).get("state") != "READY"]
            if failed:
                raise DeployError(self._failure(log, "model(s) did not load: " + "; ".join(failed)))

    def _failure(self, log: Path, what: str) -> str:
        text = log.read_text(errors="replace") if log.is_file() else ""
        errors = [line for line in text.splitlines()
                  if re.match(r"^E\d{4} ", line) and "CudaDriverHelper" not in line and "create stream" not in line
                  or line.startswith("error:") or "already in use" in line]
        kept = f" (log {log})" if self._user_log else ""
        return what + kept + (":\n  " + "\n  ".join(errors[-8:]) if errors else "")

    def failure_report(self, what: str) -> str:
        """``what``, then the error lines of the server's log."""
        return self._failure(self.log_path or Path("/nonexistent"), what)

    def models(self) -> list[dict]:
        """The repository index: ``[{"name", "version", "state", "reason"}]``, as the server reports it."""
        status, body = _status(f"http://{self.http_url}/v2/repository/index", data=b"{}")
        if status != 200:
            raise DeployError(f"the repository index answered HTTP {status}: {body[:200]!r}")
        return json.loads(body)

    def version(self) -> str:
        status, body = _status(f"http://{self.http_url}/v2")
        return json.loads(body).get("version", "?") if status == 200 else "?"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self) -> int:
        """Block until the server exits; its exit status."""
        return self.proc.wait()

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM (models unload, in-flight requests finish), then SIGKILL of the process group after ``grace``
        seconds; removes the temporary folder and the server's shared-memory files. The exit status."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(grace if grace is not None else self.exit_timeout + 30)
                except subprocess.TimeoutExpired:
                    self._kill()
            code = self.proc.returncode
            log = self.log_path if self.log_path and self.log_path.is_file() else None
            # Triton exits 1 when its --exit-timeout-secs ran out before every model unloaded: stopped all the same
            self.unload_cut_short = code == 1 and log is not None and "Exit timeout expired" in log.read_text(
                errors="replace")
        for f in Path("/dev/shm").glob(f"{self._shm_prefix}*"):  # left behind when a stub was killed
            f.unlink(missing_ok=True)
        if self._work is not None:
            if self.log_path and self.log_path.is_relative_to(self._work):
                self.log_path = None
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None
        return code

    def _kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


class _PortInUse(Exception):
    pass


_PORT_KINDS = ("HTTP", "gRPC", "metrics")


def _stop_with_parent() -> None:
    """In the child before exec: SIGTERM when the thread that started the server ends, even by SIGKILL (Linux
    ``PR_SET_PDEATHSIG``), so that no server outlives its test or its ``carafe-deploy serve``. Start servers from
    a thread that outlives them (the main thread)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
