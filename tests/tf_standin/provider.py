"""A stand-in Terraform provider: the real provider's schema, no cloud behind it.

Terraform starts it as it starts any provider (go-plugin over gRPC, mutual TLS, Terraform's plugin protocol 6)
from a filesystem mirror (tests/tf_standin/plan.py). It serves the schema tests/tf_standin/schema.py rebuilt
from the provider's CDK bindings, so `terraform validate` and `terraform plan` do all of Terraform's own
evaluation: types, references, `for_each` keys, functions, unsupported arguments. What a provider decides it
decides as a first apply would see it:
- a plan leaves every computed attribute the configuration does not set unknown (no state: all creates);
- a data source reads the configuration back, computed attributes filled with a recognisable placeholder
  (`standin:<type>.<attribute>` for a string) or an empty value of their type;
- it never applies or imports: those answer an error diagnostic.

    <python with grpcio, msgpack, cryptography, tf> provider.py <schema.json> [--reattach]

Runs in .venv-tfschema (the `tf` package's generated protocol bindings and its go-plugin services), never in
the project's own venv.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import sys
import tempfile
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import msgpack
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tf.gen import grpc_controller_pb2 as controller_pb
from tf.gen import grpc_controller_pb2_grpc as controller_rpc
from tf.gen import grpc_stdio_pb2_grpc as stdio_rpc
from tf.gen import tfplugin_pb2 as pb
from tf.gen import tfplugin_pb2_grpc as rpc

MAGIC_COOKIE_KEY = "TF_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"
UNKNOWN = msgpack.ExtType(0, b"")
PLACEHOLDER = "standin:{type}.{attribute}"
EMPTY = {"number": 0, "bool": False}


def _block_pb(block: dict[str, Any]) -> Any:
    attributes = [
        pb.Schema.Attribute(
            name=name,
            type=json.dumps(spec["type"]).encode(),
            required=spec["required"],
            optional=spec["optional"],
            computed=spec["computed"],
        )
        for name, spec in sorted(block["attributes"].items())
    ]
    nested = [
        pb.Schema.NestedBlock(
            type_name=name,
            block=_block_pb(spec["block"]),
            nesting=pb.Schema.NestedBlock.LIST,
            min_items=spec["min_items"],
            max_items=spec["max_items"],
        )
        for name, spec in sorted(block["blocks"].items())
    ]
    return pb.Schema.Block(attributes=attributes, block_types=nested)


def _schema_pb(block: dict[str, Any]) -> Any:
    return pb.Schema(version=0, block=_block_pb(block))


def _decode(value: Any) -> Any:
    return msgpack.unpackb(value.msgpack, raw=False, strict_map_key=False) if value.msgpack else None


def _encode(value: Any) -> Any:
    return pb.DynamicValue(msgpack=msgpack.packb(value, use_bin_type=True))


def _fill(block: dict[str, Any], value: dict[str, Any] | None, computed_value: Any) -> None:
    """Set every null computed attribute of `value` (and of its nested blocks) to `computed_value(name, type)`."""
    if value is None:
        return
    for name, spec in block["attributes"].items():
        if spec["computed"] and value.get(name) is None:
            value[name] = computed_value(name, spec["type"])
    for name, spec in block["blocks"].items():
        for item in value.get(name) or []:
            _fill(spec["block"], item, computed_value)


def _error(summary: str, detail: str = "") -> Any:
    return pb.Diagnostic(severity=pb.Diagnostic.ERROR, summary=summary, detail=detail)


class StandIn(rpc.ProviderServicer):  # type: ignore[misc]
    def __init__(self, schema: dict[str, Any], stopped: list[bool]) -> None:
        self.schema = schema
        self.stopped = stopped
        self._schema_response: Any = None

    def GetMetadata(self, request: Any, context: Any) -> Any:
        return pb.GetMetadata.Response(
            resources=[pb.GetMetadata.ResourceMetadata(type_name=t) for t in self.schema["resource"]],
            data_sources=[pb.GetMetadata.DataSourceMetadata(type_name=t) for t in self.schema["data"]],
        )

    def GetProviderSchema(self, request: Any, context: Any) -> Any:
        if self._schema_response is None:
            self._schema_response = pb.GetProviderSchema.Response(
                provider=_schema_pb(self.schema["provider"]),
                resource_schemas={t: _schema_pb(b) for t, b in self.schema["resource"].items()},
                data_source_schemas={t: _schema_pb(b) for t, b in self.schema["data"].items()},
            )
        return self._schema_response

    def ValidateProviderConfig(self, request: Any, context: Any) -> Any:
        return pb.ValidateProviderConfig.Response()

    def ValidateResourceConfig(self, request: Any, context: Any) -> Any:
        return pb.ValidateResourceConfig.Response()

    def ValidateDataResourceConfig(self, request: Any, context: Any) -> Any:
        return pb.ValidateDataResourceConfig.Response()

    def ConfigureProvider(self, request: Any, context: Any) -> Any:
        return pb.ConfigureProvider.Response()

    def UpgradeResourceState(self, request: Any, context: Any) -> Any:
        state = json.loads(request.raw_state.json) if request.raw_state.json else None
        return pb.UpgradeResourceState.Response(upgraded_state=_encode(state))

    def ReadResource(self, request: Any, context: Any) -> Any:
        return pb.ReadResource.Response(new_state=request.current_state, private=request.private)

    def PlanResourceChange(self, request: Any, context: Any) -> Any:
        proposed = _decode(request.proposed_new_state)
        prior = _decode(request.prior_state)
        if proposed is not None and prior is None:  # a create: what the provider computes is not known yet
            _fill(self.schema["resource"][request.type_name], proposed, lambda name, kind: UNKNOWN)
        return pb.PlanResourceChange.Response(planned_state=_encode(proposed))

    def ApplyResourceChange(self, request: Any, context: Any) -> Any:
        return pb.ApplyResourceChange.Response(
            diagnostics=[_error("The stand-in provider cannot apply", f"{request.type_name}: plan only")]
        )

    def ImportResourceState(self, request: Any, context: Any) -> Any:
        return pb.ImportResourceState.Response(
            diagnostics=[_error("The stand-in provider cannot import", request.type_name)]
        )

    def ReadDataSource(self, request: Any, context: Any) -> Any:
        config = _decode(request.config)

        def placeholder(name: str, kind: Any) -> Any:
            if kind == "string":
                return PLACEHOLDER.format(type=request.type_name, attribute=name)
            if isinstance(kind, list):
                return {} if kind[0] in ("map", "object") else []
            return EMPTY.get(kind)

        _fill(self.schema["data"][request.type_name], config, placeholder)
        return pb.ReadDataSource.Response(state=_encode(config))

    def GetFunctions(self, request: Any, context: Any) -> Any:
        return pb.GetFunctions.Response()

    def StopProvider(self, request: Any, context: Any) -> Any:
        self.stopped[0] = True
        return pb.StopProvider.Response()


def _certificate() -> tuple[bytes, bytes, bytes]:
    """A self-signed certificate for localhost: (key PEM, certificate PEM, certificate DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return (
        key_pem,
        certificate.public_bytes(serialization.Encoding.PEM),
        certificate.public_bytes(serialization.Encoding.DER),
    )


def serve(schema: dict[str, Any], reattach: bool = False) -> None:
    """go-plugin's side of the handshake, then the provider until Terraform stops it.

    `reattach`: no handshake; the provider prints its socket and serves every Terraform run given it in
    TF_REATTACH_PROVIDERS until it is killed (many short runs without a provider start each)."""
    if not reattach and os.environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE:
        print("This binary is a plugin. These are not meant to be executed directly.", file=sys.stderr)
        raise SystemExit(1)
    if "6" not in os.environ.get("PLUGIN_PROTOCOL_VERSIONS", "6").split(","):
        print("the stand-in speaks only plugin protocol 6", file=sys.stderr)
        raise SystemExit(1)
    stopped = [False]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rpc.add_ProviderServicer_to_server(StandIn(schema, stopped), server)

    class Controller(controller_rpc.GRPCControllerServicer):  # type: ignore[misc]
        def Shutdown(self, request: Any, context: Any) -> Any:
            stopped[0] = True
            return controller_pb.Empty()

    class Stdio(stdio_rpc.GRPCStdioServicer):  # type: ignore[misc]
        def StreamStdio(self, request: Any, context: Any) -> Any:
            return iter([])

    controller_rpc.add_GRPCControllerServicer_to_server(Controller(), server)
    stdio_rpc.add_GRPCStdioServicer_to_server(Stdio(), server)
    with tempfile.TemporaryDirectory(prefix="tf-standin-") as directory:
        socket = f"{directory}/plugin.sock"
        client_certificate = None if reattach else os.environ.get("PLUGIN_CLIENT_CERT")
        if client_certificate:
            # Terraform's AutoMTLS: Terraform trusts only this certificate. Its own is P-521, which gRPC's
            # BoringSSL does not accept, so the client is not verified; the socket is in a private directory.
            key_pem, cert_pem, cert_der = _certificate()
            credentials = grpc.ssl_server_credentials([(key_pem, cert_pem)], require_client_auth=False)
            server.add_secure_port(f"unix://{socket}", credentials)
            offered = base64.b64encode(cert_der).decode().rstrip("=")
        else:
            server.add_insecure_port(f"unix://{socket}")
            offered = ""
        server.start()
        print(f"1|6|unix|{socket}|grpc|{offered}", flush=True)
        while reattach or not stopped[0]:
            server.wait_for_termination(0.05)
        server.stop(grace=0.2)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[2:] not in ([], ["--reattach"]):
        print(__doc__, file=sys.stderr)
        return 2
    serve(json.loads(Path(argv[1]).read_text()), reattach=argv[2:] == ["--reattach"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
