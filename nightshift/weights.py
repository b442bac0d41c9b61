"""``nightshift serve-weights MODEL``: serve one model's weights to peers on the cluster.

MODEL is a model alias from the configuration (its ``source`` must be a local directory) or a
directory; workers look peers up by alias, so give the alias where the registry is used. The
cluster secret comes from ``--secret-file``, else ``NIGHTSHIFT_CLUSTER_SECRET``, else the
settings' ``cluster_secret_file``. With ``--registry redis://...`` (default: the settings'
``weight_registry_url``) the server advertises itself there (fingerprint, host, port,
transports, bandwidth) and withdraws on exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

log = logging.getLogger(__name__)

ADVERTISE_TTL_S = 30.0
DEFAULT_RDMA_PORT = 7471  # rdma_loader.rdma.DEFAULT_PORT, not imported: the CLI loads rdma_loader lazily


def add_command(sub) -> None:
    """Register ``serve-weights`` on the CLI's subparsers."""
    serve = sub.add_parser("serve-weights", help="serve a model's weights to peers (TCP)")
    serve.add_argument("model", help="a model alias from the configuration, or a model directory")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    serve.add_argument("--port", type=int, default=0, help="default: any free port (printed)")
    serve.add_argument("--secret-file", type=Path, help="the cluster secret (else NIGHTSHIFT_CLUSTER_SECRET)")
    serve.add_argument("--in-ram", action="store_true", help="serve from an in-RAM copy, not the page cache")
    serve.add_argument("--max-bytes-per-s", type=float, help="cap the upload (spare the owner's link)")
    serve.add_argument("--rdma-ip", help="also export over RDMA (pyverbs), rdmacm on this address")
    serve.add_argument("--rdma-port", type=_port, default=DEFAULT_RDMA_PORT,
                       help=f"rdmacm port of the RDMA export (default: {DEFAULT_RDMA_PORT}; one per server)")
    serve.add_argument("--registry", default="", help="redis:// URL to advertise on")
    serve.add_argument("--advertise-host", default="", help="address peers reach us at (default: --host)")
    serve.add_argument("--bandwidth-bytes-s", type=float, help="link speed to advertise (measured or known)")
    serve.set_defaults(func=cmd_serve_weights)


def resolve_model_dir(model: str) -> Path:
    """A directory as is; else an alias whose source is a directory."""
    path = Path(model)
    if path.is_dir():
        return path
    from scheduler.settings import get_settings

    spec = get_settings().models.get(model)
    if spec is None:
        raise SystemExit(f"model: {model!r} is neither a directory nor a configured alias")
    if not Path(spec.source).is_dir():
        raise SystemExit(f"model: alias {model!r} has source {spec.source!r}, which is not a local "
                         f"directory; serve-weights serves local safetensors directories only")
    return Path(spec.source)


def _port(text: str) -> int:
    """An argparse type: a TCP/rdmacm port number."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"got {text!r}; a port is an integer from 1 to 65535")
    return port


def _rdma_exporter(args: argparse.Namespace, model_dir: Path):
    """The pyverbs exporter on ``--rdma-ip``/``--rdma-port``, or None without ``--rdma-ip``."""
    if not args.rdma_ip:
        return None
    from rdma_loader.rdma_export import RdmaExporter

    return RdmaExporter(args.rdma_ip, args.rdma_port, model_dir=model_dir)


def cmd_serve_weights(args: argparse.Namespace) -> int:
    from rdma_loader.server import WeightServer, announce, secret_from

    model_dir = resolve_model_dir(args.model)
    try:
        env_secret = os.environ.get("NIGHTSHIFT_CLUSTER_SECRET")
        path = args.secret_file or (None if env_secret else _configured("cluster_secret_file"))
        secret = secret_from(path, env_secret)
    except (OSError, ValueError) as exc:
        raise SystemExit(str(exc)) from exc
    server = WeightServer(model_dir, secret, args.host, args.port, in_ram=args.in_ram,
                          max_bytes_per_s=args.max_bytes_per_s,
                          rdma_exporter=_rdma_exporter(args, model_dir)).start()
    announce(server)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    args.registry = args.registry or _configured("weight_registry_url")
    advertiser = _advertiser(args, server) if args.registry else None
    try:
        while not stop.wait(ADVERTISE_TTL_S / 3):
            if advertiser is not None:
                advertiser()
    except KeyboardInterrupt:
        pass
    finally:
        if advertiser is not None:
            advertiser(withdraw=True)
        server.close()
    return 0


def _configured(field: str):
    """A setting, read only when the command line and the environment did not give it."""
    from scheduler.settings import get_settings

    return getattr(get_settings(), field)


def _advertiser(args: argparse.Namespace, server):
    from rdma_loader.registry import Advertisement
    from workers.peers import RedisRegistry

    registry = RedisRegistry(args.registry)
    ad = Advertisement(server.manifest.fingerprint, args.advertise_host or args.host, server.port,
                       ("tcp", "rdma") if args.rdma_ip else ("tcp",), args.bandwidth_bytes_s, model=args.model)

    def advertise(withdraw: bool = False) -> None:
        try:
            registry.withdraw(ad) if withdraw else registry.advertise(ad, ADVERTISE_TTL_S)
        except Exception as exc:  # the registry being down must not stop serving; retried next tick
            log.warning("registry %s: %s", args.registry, exc)

    advertise()
    return advertise
