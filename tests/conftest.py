from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Running the project as user nobody (see tests/nobody.py).
from .nobody import (  # noqa: F401 (fixtures)
    nobodyPythonFixture,
    nobodyRootFixture,
    nobodyWorkdirFixture,
)
from .support import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """
    Start real clusters; every process they made is killed when the test
    ends, however it ends.
    """
    started: list[Cluster] = []

    def start(app: str | Path, **kwargs: Any) -> Cluster:
        c = Cluster(tmp_path, app, **kwargs)
        started.append(c)
        return c.start()

    yield start
    for c in started:
        c.kill()


@pytest.fixture(scope="session")
def pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    """
    A self-signed key and certificate for C{localhost}, in one PEM file.
    The name is in a subjectAltName too: Twisted before 26.10 checks it with
    service_identity, which ignores the common name.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    path = tmp_path_factory.mktemp("tls") / "server.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return str(path)
