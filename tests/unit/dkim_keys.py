"""Throwaway DKIM key pairs for tests, made by the openssl command line tool.

Neither ``cryptography`` nor another key generator is a dependency, and dkimpy
itself generates keys with openssl (its ``dknewkey``). Without openssl the DKIM
tests are skipped, or fail when OPTMSG_REQUIRE_SERVICES=1 (CI), as the
service-backed tests do.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from dataclasses import dataclass

from tests.conftest import missing_service


@dataclass(frozen=True, slots=True)
class KeyPair:
    private_pem: bytes  # PKCS#8 PEM, which dkim.sign() accepts
    public_b64: str  # DER SubjectPublicKeyInfo, base64: the p= of the key record

    def dns_record(self) -> str:
        """The TXT record to publish at ``<selector>._domainkey.<domain>``."""
        return f"v=DKIM1; k=rsa; p={self.public_b64}"


def generate(bits: int = 1024) -> KeyPair:
    """A new RSA key pair (1024 bits: the smallest verifiers accept, fast to make)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        missing_service("openssl", "cannot generate DKIM test keys")
    private_pem = subprocess.run(
        [openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"],
        check=True,
        capture_output=True,
    ).stdout
    public_der = subprocess.run(
        [openssl, "pkey", "-pubout", "-outform", "DER"],
        input=private_pem,
        check=True,
        capture_output=True,
    ).stdout
    return KeyPair(private_pem, base64.b64encode(public_der).decode("ascii"))
