#!/usr/bin/env python3
"""buf plugin that runs the protoc bundled in grpc_tools (PyPI) on the request.

buf's `protoc_builtin` needs a protoc binary on PATH, and grpc_tools ships the gRPC
generator only inside its embedded protoc, so this wrapper hands the request's
descriptors to that protoc. The plugin option names the generators to run, e.g.
`opt: [python, grpc_python]`; outputs are returned to buf unchanged.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        descriptor_set = descriptor_pb2.FileDescriptorSet(file=request.proto_file)
        (root / "set.binpb").write_bytes(descriptor_set.SerializeToString())
        out = root / "out"
        out.mkdir()
        generators = [g for g in request.parameter.split(",") if g] or ["grpc_python"]
        args = [
            "grpc_tools.protoc",
            f"--descriptor_set_in={root / 'set.binpb'}",
            *(f"--{generator}_out={out}" for generator in generators),
            *request.file_to_generate,
        ]
        if protoc.main(args) != 0:
            response.error = "grpc_tools.protoc failed"
        else:
            for path in sorted(out.rglob("*.py")):
                generated = response.file.add()
                generated.name = str(path.relative_to(out))
                generated.content = path.read_text()
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
