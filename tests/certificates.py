"""Certificate authorities and server certificates for TLS tests, made with openssl.

EC P-256 keys: a few milliseconds each, where RSA takes hundreds.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr}")


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate authority: (certificate, key)."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}")
    return cert, key


def make_server_cert(folder: Path, name: str, ca: tuple[Path, Path], dns_names: tuple[str, ...]) -> tuple[Path, Path]:
    """A server certificate signed by ``ca``, valid for ``dns_names`` only: (certificate, key)."""
    cert, key, request = folder / f"{name}.crt", folder / f"{name}.key", folder / f"{name}.csr"
    extensions = folder / f"{name}.ext"
    extensions.write_text("subjectAltName=" + ",".join(f"DNS:{dns}" for dns in dns_names) + "\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(request), "-subj", f"/CN={dns_names[0]}")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(extensions))
    os.chmod(key, 0o600)
    return cert, key
