"""gRPC helpers for the h2 tests: the helloworld stubs generated at test time, a backend.

`generated(dir)` runs grpcio-tools' protoc on tests/data/h2/helloworld.proto into
`dir` and imports the modules (nothing generated is committed). `python -m
tests.h2_grpc --port P --name v1 --gen DIR` serves the Greeter: every reply
says which server sent it, echoes the l5d-* headers (and `via`, as
`seen-via`) it received in its trailing metadata, and can fail with a given
status or exit mid-stream.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

PROTO_DIR = Path(__file__).resolve().parent / "data" / "h2"


def generated(out_dir: str | os.PathLike[str]) -> tuple[ModuleType, ModuleType]:
    """(helloworld_pb2, helloworld_pb2_grpc), generated into `out_dir` if not there yet."""
    out = Path(out_dir)
    if not (out / "helloworld_pb2_grpc.py").exists():
        from grpc_tools import protoc

        out.mkdir(parents=True, exist_ok=True)
        rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}",
                          f"--grpc_python_out={out}", str(PROTO_DIR / "helloworld.proto")])
        if rc != 0:
            raise RuntimeError(f"protoc failed with {rc}")
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    pb2 = importlib.import_module("helloworld_pb2")
    pb2_grpc = importlib.import_module("helloworld_pb2_grpc")
    return pb2, pb2_grpc


def serve(port: int, name: str, gen_dir: str, fail_code: int = 0) -> None:
    import grpc

    pb2, pb2_grpc = generated(gen_dir)

    def l5d_metadata(context: Any) -> tuple[tuple[str, str], ...]:
        md = tuple((k, v) for k, v in context.invocation_metadata()
                   if k.startswith("l5d-") and isinstance(v, str))
        via = tuple(("seen-via", v) for k, v in context.invocation_metadata() if k == "via")
        return md + via + (("server", name),)

    class Greeter(pb2_grpc.GreeterServicer):  # type: ignore[misc,name-defined]
        def SayHello(self, request: Any, context: Any) -> Any:  # noqa: N802
            context.set_trailing_metadata(l5d_metadata(context))
            code = request.fail_code or fail_code
            if code:
                context.abort(grpc.StatusCode(_code(code)), f"{name} failing")
            return pb2.HelloReply(message=f"{name}: hello {request.name}",
                                  payload=b"x" * request.payload_size)

        def SayHelloStream(self, request: Any, context: Any) -> Any:  # noqa: N802
            context.set_trailing_metadata(l5d_metadata(context))
            payload = b"y" * request.payload_size
            for i in range(request.count):
                if request.die_after and i == request.die_after:
                    sys.stdout.flush()
                    os._exit(3)  # the process dies mid-stream
                yield pb2.HelloReply(message=f"{name}: {i}", payload=payload)
            if request.fail_code:
                context.abort(grpc.StatusCode(_code(request.fail_code)), f"{name} failing")

        def CollectHellos(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
            names = [r.name for r in request_iterator]
            context.set_trailing_metadata(l5d_metadata(context))
            return pb2.HelloReply(message=f"{name}: hello {','.join(names)}")

        def Chat(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
            context.set_trailing_metadata(l5d_metadata(context))
            for r in request_iterator:
                yield pb2.HelloReply(message=f"{name}: hi {r.name}")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_send_message_length", 8 << 20)])
    pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"serving {name} on {port}", flush=True)
    server.wait_for_termination()


def _code(n: int) -> Any:
    import grpc

    for c in grpc.StatusCode:
        if c.value[0] == n:
            return c.value
    return grpc.StatusCode.UNKNOWN.value


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--gen", required=True)
    ap.add_argument("--fail-code", type=int, default=0, help="every SayHello fails so")
    a = ap.parse_args()
    serve(a.port, a.name, a.gen, a.fail_code)
