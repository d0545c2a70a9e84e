"""Generate Python code and a descriptor image from proto/.

Usage: python scripts/gen_proto.py [--image-only OUT --proto-root DIR]

* Python messages, gRPC stubs and mypy stubs go to libs/contracts/src (the `continuum`
  package tree), plus `buf/validate/validate_pb2.py` for the protovalidate annotations.
* A FileDescriptorSet with source info (build/continuum.binpb) feeds `buf lint` and
  `buf breaking`.

protovalidate's PyPI wheel ships buf/validate/validate.proto only as a compiled descriptor,
not as source; this script lifts that descriptor from the installed package at build time
and hands it to protoc with --descriptor_set_in, so nothing third-party is vendored here.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import shutil
import sys
from pathlib import Path

import grpc_tools
from google.protobuf import descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "libs" / "contracts" / "src"
BUILD = ROOT / "build"


def _validate_descriptor() -> bytes:
    spec = importlib.util.find_spec("protovalidate")
    if spec is None or spec.origin is None:
        raise SystemExit("protovalidate is not installed: run `make setup`")
    source = Path(spec.origin).parent / "_gen" / "buf" / "validate" / "validate_pb.py"
    tree = ast.parse(source.read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "file_desc"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, bytes)
        ):
            return node.args[0].value
    raise SystemExit(f"no file descriptor found in {source}")


def vendor_descriptor_set(path: Path) -> None:
    fds = descriptor_pb2.FileDescriptorSet()
    for module in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        fdp = fds.file.add()
        module.DESCRIPTOR.CopyToProto(fdp)
    fds.file.add().ParseFromString(_validate_descriptor())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(fds.SerializeToString())


def _includes() -> list[str]:
    import google.api  # googleapis-common-protos ships google/api, google/rpc, google/type

    googleapis_root = Path(next(iter(google.api.__path__))).parent.parent
    wkt_root = Path(next(iter(grpc_tools.__path__))) / "_proto"
    return [f"-I{googleapis_root}", f"-I{wkt_root}"]


def _protoc(args: list[str]) -> None:
    from grpc_tools import protoc

    code = protoc.main(["grpc_tools.protoc", *args])
    if code != 0:
        raise SystemExit(f"protoc failed ({code})")


def proto_files(proto_root: Path) -> list[str]:
    return sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))


def build_image(proto_root: Path, out: Path) -> None:
    vendor = out.with_name(out.stem + ".vendor.binpb")
    vendor_descriptor_set(vendor)
    out.parent.mkdir(parents=True, exist_ok=True)
    _protoc(
        [
            f"-I{proto_root}",
            *_includes(),
            f"--descriptor_set_in={vendor}",
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *proto_files(proto_root),
        ]
    )


def generate() -> None:
    proto_root = ROOT / "proto"
    vendor = BUILD / "vendor.binpb"
    vendor_descriptor_set(vendor)
    for generated in (OUT / "continuum", OUT / "buf"):
        shutil.rmtree(generated, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    _protoc(
        [
            f"-I{proto_root}",
            *_includes(),
            f"--descriptor_set_in={vendor}",
            f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
            f"--python_out={OUT}",
            f"--grpc_python_out={OUT}",
            f"--mypy_out={OUT}",
            f"--mypy_grpc_out={OUT}",
            "buf/validate/validate.proto",
            *proto_files(proto_root),
        ]
    )
    # Every folder is a regular package, typed for mypy.
    for top in (OUT / "continuum", OUT / "buf"):
        for folder in [top, *[p for p in top.rglob("*") if p.is_dir()]]:
            (folder / "__init__.py").touch()
        (top / "py.typed").touch()
    build_image(proto_root, BUILD / "continuum.binpb")
    _generate_test_protos(vendor)
    print(f"generated {len(proto_files(proto_root))} proto files into {OUT.relative_to(ROOT)}")


def _generate_test_protos(vendor: Path) -> None:
    """Protos that only the tests use (tests/proto) go to tests/_generated."""
    test_root = ROOT / "tests" / "proto"
    out = ROOT / "tests" / "_generated"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    bindir = Path(sys.executable).parent
    _protoc(
        [
            f"-I{test_root}",
            f"-I{ROOT / 'proto'}",
            *_includes(),
            f"--descriptor_set_in={vendor}",
            f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *proto_files(test_root),
        ]
    )
    for folder in [p for p in out.rglob("*") if p.is_dir()]:
        (folder / "__init__.py").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-only", type=Path, help="only write a descriptor image here")
    parser.add_argument("--proto-root", type=Path, default=ROOT / "proto")
    args = parser.parse_args()
    if args.image_only:
        build_image(args.proto_root.resolve(), args.image_only.resolve())
    else:
        generate()


if __name__ == "__main__":
    main()
