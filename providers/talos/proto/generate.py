"""Regenerate the Talos API message and grpclib stub modules from the .proto files in src/.

Usage: ``python providers/talos/proto/generate.py [OUTDIR]`` (default: this folder). `make proto`
runs it; tests/providers/test_proto_uptodate.py runs it into a temporary folder and compares.

The .proto sources keep Talos's import paths (``common/common.proto`` ...), so protoc emits
top-level imports such as ``from common import common_pb2``. The generated modules are flattened
into this one package (``machine/machine.proto`` -> ``machine_pb2.py``) and their imports rewritten
to ``trustplan.providers.talos.proto``, so they import as a subpackage of trustplan and never
shadow other top-level modules. Descriptor file names stay the Talos ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
PACKAGE = "trustplan.providers.talos.proto"

#: proto file (relative to src/) -> flat module stem in this package
MODULES: dict[str, str] = {
    "common/common.proto": "common",
    "cosi/meta.proto": "cosi_meta",
    "cosi/resource.proto": "cosi_resource",
    "cosi/state.proto": "cosi_state",
    "google/rpc/status.proto": "google_rpc_status",
    "machine/machine.proto": "machine",
    "resource/config/config.proto": "resource_config",
    "resource/definitions/cluster/cluster.proto": "resource_cluster",
    "resource/definitions/enums/enums.proto": "resource_enums",
    "resource/definitions/secrets/secrets.proto": "resource_secrets",
    "resource/definitions/v1alpha1/v1alpha1.proto": "resource_v1alpha1",
}


def _dotted(proto: str) -> str:
    """The module protoc names for a proto file: ``cosi/state.proto`` -> ``cosi.state_pb2``."""
    return proto[: -len(".proto")].replace("/", ".") + "_pb2"


def _rewrite(text: str) -> str:
    for proto, flat in MODULES.items():
        dotted = _dotted(proto)
        parent, _, leaf = dotted.rpartition(".")
        # protobuf modules: `from cosi import state_pb2 as alias`
        text = re.sub(
            rf"^from {re.escape(parent)} import {leaf} as ",
            f"from {PACKAGE} import {flat}_pb2 as ",
            text,
            flags=re.M,
        )
        # grpclib stubs: `import cosi.state_pb2`, then `cosi.state_pb2.GetRequest`
        text = re.sub(rf"^import {re.escape(dotted)}$", f"from {PACKAGE} import {flat}_pb2", text, flags=re.M)
        text = re.sub(rf"(?<![\w.]){re.escape(dotted)}\b", f"{flat}_pb2", text)
    # the module name the builder registers classes under
    text = re.sub(
        r"BuildTopDescriptorsAndMessages\(DESCRIPTOR, '([\w.]+)'",
        lambda m: f"BuildTopDescriptorsAndMessages(DESCRIPTOR, '{PACKAGE}.{_flat_of(m.group(1))}'",
        text,
    )
    return text


def _flat_of(dotted: str) -> str:
    for proto, flat in MODULES.items():
        if _dotted(proto) == dotted:
            return flat + "_pb2"
    return dotted


def _plugin() -> str:
    name = "protoc-gen-grpclib_python"
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not found:
        raise SystemExit(f"{name} not found (install grpclib into this Python environment)")
    return found


def generate(outdir: Path) -> list[Path]:
    """Run protoc on every file in MODULES and write the flattened modules into `outdir`."""
    from grpc_tools import protoc

    well_known = str(resources.files("grpc_tools") / "_proto")
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{SRC}",
            f"-I{well_known}",
            f"--plugin=protoc-gen-grpclib_python={_plugin()}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpclib_python_out={tmp}",
            *sorted(MODULES),
        ]
        cwd = os.getcwd()
        os.chdir(SRC)
        try:
            code = protoc.main(args)
        finally:
            os.chdir(cwd)
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        outdir.mkdir(parents=True, exist_ok=True)
        for proto, flat in sorted(MODULES.items()):
            stem = Path(tmp) / proto[: -len(".proto")]
            for suffix, target in (("_pb2.py", "_pb2.py"), ("_pb2.pyi", "_pb2.pyi"), ("_grpc.py", "_grpc.py")):
                source = stem.with_name(stem.name + suffix)
                text = source.read_text()
                if suffix == "_grpc.py" and "class " not in text:
                    continue  # no services in this file
                dest = outdir / f"{flat}{target}"
                dest.write_text(_rewrite(text))
                written.append(dest)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    outdir = Path(args[0]) if args else HERE
    for path in generate(outdir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
