"""TLS and mutual TLS between a Continuum server and client, with certificates made here."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from continuum_runtime.client import create_channel
from continuum_runtime.config import AuthSettings, ServiceSettings, TLSSettings
from probe.v1 import probe_service_pb2 as pb
from probe.v1 import probe_service_pb2_grpc as pb_grpc
from tests.runtime.probe import ProbeServicer, probe_server


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(
    path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> tuple[Path, Path]:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".crt")
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _issue(
    ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, cn: str, *, server: bool
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("continuum test CA")
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _, ca_path = _write(folder / "ca", ca_key, ca_cert)
    server_key, server_cert = _write(
        folder / "server", *_issue(ca_key, ca_name, "probe", server=True)
    )
    client_key, client_cert = _write(
        folder / "client", *_issue(ca_key, ca_name, "cart", server=False)
    )
    return {
        "ca": ca_path,
        "server_key": server_key,
        "server_cert": server_cert,
        "client_key": client_key,
        "client_cert": client_cert,
    }


async def test_mutual_tls_admits_only_clients_with_a_certificate(
    pki: dict[str, Path], auth_settings: AuthSettings, make_token
) -> None:  # type: ignore[no-untyped-def]
    tls = TLSSettings(
        enabled=True,
        cert_file=pki["server_cert"],
        key_file=pki["server_key"],
        ca_file=pki["ca"],
        require_client_cert=True,
    )
    server = probe_server(
        ServiceSettings(service_name="probe", auth=auth_settings, tls=tls), ProbeServicer()
    )
    await server.start()
    target = f"127.0.0.1:{server.port}"
    token = make_token(subject="cart")
    try:
        with_cert = TLSSettings(
            enabled=True,
            ca_file=pki["ca"],
            cert_file=pki["client_cert"],
            key_file=pki["client_key"],
        )
        async with create_channel(target, token=lambda: token, tls=with_cert) as channel:
            reply = await pb_grpc.ProbeServiceStub(channel).Echo(pb.EchoRequest(text="secure"))
            assert reply.text == "secure"
            assert reply.principal == "cart"

        without_cert = TLSSettings(enabled=True, ca_file=pki["ca"])
        async with create_channel(target, token=lambda: token, tls=without_cert) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await pb_grpc.ProbeServiceStub(channel).Echo(pb.EchoRequest(text="x"), timeout=3)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE

        async with create_channel(target, token=lambda: token) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await pb_grpc.ProbeServiceStub(plaintext).Echo(pb.EchoRequest(text="x"), timeout=3)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.drain(grace_s=0.1)
