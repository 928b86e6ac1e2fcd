"""The cluster's certificates: one CA, and certificates that carry a role and a name.

`init_ca` writes a CA (`ca.crt`, and `ca.key` with mode 0600) into a directory;
`issue` signs a certificate for a role (`manager`, `daemon`, `user`) and a name.
The role and name live in the certificate itself, as a URI subject alternative
name `agenthost://<role>/<name>` (an admin user's is
`agenthost://user/<name>?scope=admin`), so a peer's identity comes from the
transport, never from a field it fills in. `TlsFiles` is the `ca`/`cert`/`key`
table of a config; it builds gRPC server and channel credentials and says whose
certificate it holds. `identity_of` reads a caller's identity from a call's
authentication context.

Keys are ECDSA P-256 (fast to make and to handshake). Knows certificates and
gRPC credentials; nothing of agents, kernels or tokens.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import Field

from common.addresses import is_loopback
from common.atomic_file import write_atomically
from common.config import StrictModel
from common.errors import InvalidArgument
from common.ids import ID_SYNTAX, is_valid_id

Role = Literal["manager", "daemon", "user"]
ROLES: tuple[str, ...] = get_args(Role)
URI_SCHEME = "agenthost"
CA_CERT, CA_KEY = "ca.crt", "ca.key"
CA_DAYS = 3650
CERT_DAYS = 825


@dataclass(frozen=True)
class Identity:
    """Who a certificate says its holder is."""

    role: str
    name: str
    admin: bool = False

    @property
    def uri(self) -> str:
        """The URI subject alternative name that carries it."""
        base = f"{URI_SCHEME}://{self.role}/{self.name}"
        return base + ("?scope=admin" if self.admin else "")

    def __str__(self) -> str:
        return f"{self.role}/{self.name}" + (" (admin)" if self.admin else "")


def daemon_host(name: str) -> str:
    """The DNS name a daemon certificate carries besides the hosts it is issued for, so
    that the manager can verify a daemon by its identity rather than by the address it
    dialed: `<name>.daemon.agenthost.invalid`.

    The manager dials a daemon at whatever address it registered from (in a cluster, a
    pod IP no certificate made in advance can name) and checks the certificate against
    this name instead (`grpc.ssl_target_name_override`). `.invalid` never resolves, so
    the name cannot be anyone's real host. TLS compares host names without regard to
    case: to this check, identities that differ only in case are one.
    """
    return f"{name}.daemon.{URI_SCHEME}.invalid"


@functools.lru_cache(maxsize=4096)
def parse_identity(uri: str) -> Identity | None:
    """The identity in an `agenthost://role/name[?scope=admin]` URI, or None.

    Cached: every call of a connection presents the same certificate.
    """
    parsed = urllib.parse.urlsplit(uri)
    name = parsed.path.lstrip("/")
    if parsed.scheme != URI_SCHEME or parsed.netloc not in ROLES or not is_valid_id(name):
        return None
    admin = urllib.parse.parse_qs(parsed.query).get("scope") == ["admin"]
    return Identity(role=parsed.netloc, name=name, admin=admin and parsed.netloc == "user")


# ------------------------------------------------------------------ issuing


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(path, data, mode=mode)


def init_ca(directory: Path, days: int = CA_DAYS) -> tuple[Path, Path]:
    """Create a CA in directory (`ca.crt`, `ca.key` 0600); refuse to replace one."""
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if cert_path.exists() or key_path.exists():
        raise InvalidArgument(
            f"{directory} already holds a CA ({CA_CERT}); certificates it signed would stop "
            "working if it were replaced: remove it first to start over"
        )
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agenthost cluster CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def cert_paths(directory: Path, role: str, name: str) -> tuple[Path, Path]:
    """Where `issue` writes the certificate and key of role/name."""
    return directory / f"{role}-{name}.crt", directory / f"{role}-{name}.key"


def _common_name(role: str, name: str) -> str:
    """The subject's CN, for people reading the certificate: X.509 allows 64 characters
    and a name may have 63, so a long one is cut (the identity is the SAN URI)."""
    return f"{role}/{name}"[:64]


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def issue(
    directory: Path,
    role: str,
    name: str,
    sans: Sequence[str] = (),
    admin: bool = False,
    days: int = CERT_DAYS,
) -> tuple[Path, Path]:
    """Sign a certificate for role/name with the CA in directory; return (cert, key) paths.

    sans are the host names and addresses a server certificate is reached at; a daemon
    certificate also carries `daemon_host(name)`, which the manager
    checks it by.
    """
    if role not in ROLES:
        raise InvalidArgument(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not is_valid_id(name):
        raise InvalidArgument(f"name {name!r} is not valid: {ID_SYNTAX}")
    if admin and role != "user":
        raise InvalidArgument("only a user certificate can carry the admin scope")
    ca_cert, ca_key = _load_ca(directory)
    key = _new_key()
    identity = Identity(role, name, admin)
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    hosts = list(sans)
    if role != "user":
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if role == "daemon":
        hosts.append(daemon_host(name))  # verifiable by its name wherever it listens
    alt_names += [_san(host) for host in dict.fromkeys(hosts)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _common_name(role, name))])
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = cert_paths(directory, role, name)
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise InvalidArgument(
            f"{exc.filename}: no such file; create a CA first with: agenthost certs init "
            f"{directory}"
        ) from None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"{directory}: cannot read the CA: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"{key_path}: not an agenthost CA key (expected ECDSA)")
    return cert, key


# ------------------------------------------------------------------ using


class TlsFiles(StrictModel):
    """A `tls` table: the cluster CA, and this process's certificate and key."""

    ca: Path = Field(..., description="the cluster CA certificate (agenthost certs init)")
    cert: Path = Field(..., description="this process's certificate (agenthost certs issue)")
    key: Path = Field(..., description="the private key of cert (mode 0600)")


@dataclass(frozen=True)
class LoadedTls:
    """The bytes of a `tls` table, checked, and whose certificate it is."""

    ca: bytes
    cert: bytes
    key: bytes
    identity: Identity

    def server_credentials(self, require_client_cert: bool) -> grpc.ServerCredentials:
        """TLS for a server; with require_client_cert, only holders of a CA certificate connect."""
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca,
            require_client_auth=require_client_cert,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS for a client that verifies the server and presents this certificate."""
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)


def load_tls(files: TlsFiles, base: Path, expect_role: str, where: str) -> LoadedTls:
    """Read and check a tls table (paths relative to base); InvalidArgument naming the key.

    The certificate must be signed by the CA, still valid, match its key, and
    carry role expect_role.
    """
    data: dict[str, bytes] = {}
    for name in ("ca", "cert", "key"):
        path = getattr(files, name)
        path = path if path.is_absolute() else base / path
        try:
            data[name] = path.read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"{where}.{name}: cannot read {path}: {exc.strerror}") from None
    try:
        ca = x509.load_pem_x509_certificate(data["ca"])
    except ValueError:
        raise InvalidArgument(f"{where}.ca: {files.ca} is not a PEM certificate") from None
    try:
        cert = x509.load_pem_x509_certificate(data["cert"])
    except ValueError:
        raise InvalidArgument(f"{where}.cert: {files.cert} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(data["key"], password=None)
    except (ValueError, TypeError):
        raise InvalidArgument(
            f"{where}.key: {files.key} is not an unencrypted PEM private key"
        ) from None
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise InvalidArgument(
            f"{where}.cert: {files.cert} is not signed by the CA in {files.ca}"
        ) from None
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise InvalidArgument(
            f"{where}.cert: {files.cert} is not valid now (valid "
            f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}); "
            "issue a new one with agenthost certs issue"
        )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ours = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public != ours:
        raise InvalidArgument(f"{where}.key: {files.key} is not the key of {files.cert}")
    identity = certificate_identity(cert)
    if identity is None or identity.role != expect_role:
        found = f"a {identity.role} certificate" if identity else "no agenthost identity"
        raise InvalidArgument(
            f"{where}.cert: {files.cert} holds {found}; this process needs a {expect_role} "
            f"certificate (agenthost certs issue --role {expect_role} --name NAME)"
        )
    return LoadedTls(ca=data["ca"], cert=data["cert"], key=data["key"], identity=identity)


def carries_daemon_host(pem: bytes) -> bool:
    """Whether a daemon certificate names its identity as a host (see daemon_host): those
    issued before the manager verified daemons by name do not."""
    cert = x509.load_pem_x509_certificate(pem)
    identity = certificate_identity(cert)
    if identity is None or identity.role != "daemon":
        return False
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    wanted = daemon_host(identity.name).lower()
    return any(name.lower() == wanted for name in sans.get_values_for_type(x509.DNSName))


def certificate_identity(cert: x509.Certificate) -> Identity | None:
    """The agenthost identity a certificate carries, if any."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return first_identity(sans.get_values_for_type(x509.UniformResourceIdentifier))


def first_identity(uris: Iterable[str]) -> Identity | None:
    """The first agenthost identity among URIs."""
    for uri in uris:
        identity = parse_identity(uri)
        if identity is not None:
            return identity
    return None


def identity_of(auth_context: Mapping[str, Iterable[bytes]]) -> Identity | None:
    """The verified identity of a call's peer certificate (None without one)."""
    sans = auth_context.get("x509_subject_alternative_name", ())
    return first_identity(value.decode(errors="replace") for value in sans)


def read_ca(path: Path) -> bytes:
    """The CA certificate a client verifies servers with."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the CA certificate {path}: {exc.strerror}") from None


def resolve_tls(
    files: TlsFiles | None, insecure: bool, listen: str, base: Path, role: str, table: str
) -> LoadedTls | None:
    """The TLS of a server config (`[<table>.tls]`), or None for an allowed plaintext one.

    Secure by default: a server without a tls table must say `insecure = true`,
    and may then listen on a loopback address only.
    """
    if files is not None and insecure:
        raise InvalidArgument(f"{table}: give either [{table}.tls] or insecure = true, not both")
    if files is not None:
        return load_tls(files, base, role, f"{table}.tls")
    if not insecure:
        raise InvalidArgument(
            f"{table}: [{table}.tls] is required (ca, cert, key: make them with agenthost "
            f"certs init and agenthost certs issue --role {role}), or set insecure = true to "
            "serve plaintext on a loopback address"
        )
    if not is_loopback(listen):
        raise InvalidArgument(
            f"{table}.insecure: plaintext is allowed only on a loopback address, not on "
            f"{listen}; give [{table}.tls] to listen there"
        )
    return None
