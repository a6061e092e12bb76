"""carafe-deploy serve: run a Triton Inference Server on a model repository, here, from PyPI.

The server is the tritonserver inside the nvidia-pytriton wheel (Triton 2.51.0, NGC 24.10; Python backend only,
so the NAME_python models, the ensembles and their pre- and post-processing serve, NAME_onnxruntime and
NAME_tensorrt are listed as unavailable). It lives in its own virtual environment (numpy<2, which its Python backend
needs): make it once with carafe-deploy serve --install. Prints the endpoints when the models are ready; Ctrl-C
stops the server.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import HelpFormatter, port


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a Triton model repository (Triton from PyPI, CPU)", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("repository", type=Path, nargs="?", metavar="REPO",
                   help="the model repository (carafe-deploy triton)")
    p.add_argument("--install", action="store_true", help="make the server environment (then serve REPO if given)")
    p.add_argument("--server-env", type=Path, metavar="DIR",
                   help="the server environment (default: $CARAFE_DEPLOY_TRITON_ENV, else "
                        "~/.cache/carafe-deploy/triton-server)")
    p.add_argument("--load-model", dest="load_model", action="append", metavar="NAME",
                   help="load only this model (repeatable; an ensemble loads its steps; default: every model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--http-port", type=port, metavar="N", default=8000, help="HTTP/REST port")
    p.add_argument("--grpc-port", type=port, metavar="N", default=8001, help="gRPC port")
    p.add_argument("--metrics-port", type=port, metavar="N", default=8002, help="Prometheus metrics port")
    p.add_argument("--log", type=Path, metavar="FILE", help="write the server's log here (default: a temporary file)")
    p.add_argument("--timeout", type=float, default=300, metavar="S", help="seconds to wait for the models to load")
    p.add_argument("--exit-timeout", type=int, default=5, metavar="S",
                   help="at a stop (Ctrl-C), seconds Triton waits for requests in flight and for the models to unload")
    p.set_defaults(func=run)


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    import signal
    import time

    from ..errors import DeployError
    from ..report import console, make_table
    from ..serving.server import TritonServer, find_server, install_server

    out = console()
    if args.install:
        install_server(args.server_env, log=lambda m: out.print(f"[dim]{m}[/dim]"))
        if args.repository is None:
            return 0
    elif args.repository is None:
        raise DeployError("give the model repository (REPO), or --install to make the server environment")
    if args.exit_timeout < 0 or not args.timeout > 0:
        raise ValueError(f"--timeout must be > 0 and --exit-timeout >= 0, got {args.timeout} and {args.exit_timeout}")
    install = find_server(args.server_env)
    if args.repository.is_dir() and not any(args.repository.glob("*/config.pbtxt")):
        raise DeployError(f"{args.repository} holds no model (no NAME/config.pbtxt in it): the server would serve "
                          f"nothing; write a repository with carafe-deploy triton MODEL.onnx -o REPO")
    server = TritonServer(args.repository, install=install, models=args.load_model, host=args.host,
                          http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                          log_path=args.log, timeout=args.timeout, exit_timeout=args.exit_timeout)
    t0 = time.perf_counter()
    try:
        with out.status(f"starting Triton on {server.repository}"):
            server.start()
        states = server.models()
        rows = [(m["name"], m.get("version", "-"), "[green]READY[/]" if m.get("state") == "READY" else
                 f"[yellow]{m.get('state', 'not loaded')}[/]", m.get("reason", "")) for m in states]
        out.print(make_table(f"Triton {server.version()} serving {server.repository} "
                             f"(ready in {time.perf_counter() - t0:.1f} s)", ("model", "version", "state", "reason"),
                             rows))
        out.print(f"HTTP     http://{server.http_url}   e.g. curl http://{server.http_url}/v2/models/<model>\n"
                  f"gRPC     {server.grpc_url}\n"
                  f"metrics  {server.metrics_url}")
        if args.log:
            out.print(f"log      {args.log}")
        out.print("Ctrl-C stops the server.", highlight=False)
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server as Ctrl-C does
        code = server.wait()
        out.print(server.failure_report(f"tritonserver exited by itself with status {code}"), style="red")
        return 1
    except KeyboardInterrupt:
        t1 = time.perf_counter()
        out.print("stopping Triton ...")
        code = server.stop()
        if server.unload_cut_short:  # the stop asked for, quicker than the models' unloading: no failure
            out.print(f"stopped in {time.perf_counter() - t1:.1f} s (Triton's {server.exit_timeout} s for unloading "
                      "the models ran out, and it exited before the last ones had unloaded)")
            return 0
        out.print(f"stopped (exit status {code}) in {time.perf_counter() - t1:.1f} s")
        return 0 if code == 0 else 1
    finally:
        server.stop()
