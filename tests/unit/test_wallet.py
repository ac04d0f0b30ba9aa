"""Wallet passes: an Apple Wallet .pkpass whose manifest hashes and detached PKCS#7 signature
verify against the configured certificates, and a Google Wallet save link whose JWT verifies
with the service account's public key. The certificates and keys are made here, in the test."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from patron.domain.errors import InvalidInput
from patron.services import wallet

CARD = wallet.Card(
    member_id="mem_123",
    card_number="PT1234567890",
    name="Ann Lee",
    program_name="Bean Rewards",
    points_name="beans",
    points=1250,
    tier="Gold",
)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey, password: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def make_apple_files(folder: Path, *, password: str | None = None) -> dict[str, str]:
    """A stand-in WWDR CA and a pass certificate it issued, as PEM files; the environment that
    configures them."""
    now = datetime.now(UTC)
    ca_key, pass_key = _key(), _key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Test WWDR CA"))
        .issuer_name(_name("Test WWDR CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Pass Type ID: pass.example.patron"))
        .issuer_name(ca.subject)
        .public_key(pass_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )
    files = {
        "wwdr.pem": ca.public_bytes(serialization.Encoding.PEM),
        "pass.pem": cert.public_bytes(serialization.Encoding.PEM),
        "pass.key": _pem_key(pass_key, password.encode() if password else None),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    env = {
        "PATRON_APPLE_PASS_CERT": str(folder / "pass.pem"),
        "PATRON_APPLE_PASS_KEY": str(folder / "pass.key"),
        "PATRON_APPLE_WWDR_CERT": str(folder / "wwdr.pem"),
        "PATRON_APPLE_PASS_TYPE_ID": "pass.example.patron",
        "PATRON_APPLE_TEAM_ID": "ABCDE12345",
    }
    if password:
        env["PATRON_APPLE_PASS_KEY_PASSWORD"] = password
    return env


def make_google_file(folder: Path) -> tuple[dict[str, str], rsa.RSAPublicKey]:
    """A service account key file and the environment that configures it; the public key."""
    key = _key()
    account = {
        "type": "service_account",
        "client_email": "wallet@patron-test.iam.gserviceaccount.com",
        "private_key": _pem_key(key).decode(),
    }
    path = folder / "service-account.json"
    path.write_text(json.dumps(account))
    env = {
        "PATRON_GOOGLE_WALLET_ISSUER_ID": "3388000000012345678",
        "PATRON_GOOGLE_WALLET_KEY_FILE": str(path),
    }
    return env, key.public_key()


def settings_from(env: dict[str, str]) -> wallet.WalletSettings:
    return wallet.WalletSettings(**{k.removeprefix("PATRON_").lower(): v for k, v in env.items()})


def unpack(pkpass: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(pkpass)) as z:
        return {name: z.read(name) for name in z.namelist()}


def openssl_verify(folder: Path, files: dict[str, bytes], ca: str) -> subprocess.CompletedProcess[bytes]:
    (folder / "signature.der").write_bytes(files["signature"])
    (folder / "manifest.json").write_bytes(files["manifest.json"])
    return subprocess.run(
        ["openssl", "smime", "-verify", "-binary", "-inform", "DER", "-purpose", "any",
         "-in", str(folder / "signature.der"), "-content", str(folder / "manifest.json"),
         "-CAfile", ca, "-out", "/dev/null"],
        capture_output=True,
        check=False,
    )  # fmt: skip


def decode_jwt(token: str, public: rsa.RSAPublicKey) -> dict[str, Any]:
    """Verify an RS256 JWT with ``public`` and return its claims."""
    header_b64, body_b64, sig_b64 = token.split(".")

    def b64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    assert json.loads(b64(header_b64)) == {"alg": "RS256", "typ": "JWT"}
    public.verify(b64(sig_b64), f"{header_b64}.{body_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
    claims: dict[str, Any] = json.loads(b64(body_b64))
    return claims


def test_nothing_configured_means_no_wallets() -> None:
    assert wallet.apple_config(settings_from({})) is None
    assert wallet.google_config(settings_from({})) is None


def test_a_partial_apple_configuration_is_not_configured(tmp_path: Path) -> None:
    env = make_apple_files(tmp_path)
    del env["PATRON_APPLE_WWDR_CERT"]
    assert wallet.apple_config(settings_from(env)) is None


def test_an_unreadable_certificate_is_reported(tmp_path: Path) -> None:
    env = make_apple_files(tmp_path)
    env["PATRON_APPLE_PASS_CERT"] = str(tmp_path / "missing.pem")
    with pytest.raises(InvalidInput, match="PATRON_APPLE_PASS_CERT"):
        wallet.apple_config(settings_from(env))
    (tmp_path / "junk.pem").write_text("not a certificate")
    env["PATRON_APPLE_PASS_CERT"] = str(tmp_path / "junk.pem")
    with pytest.raises(InvalidInput):
        wallet.apple_config(settings_from(env))


def test_the_pass_lists_every_file_with_its_sha1_and_shows_the_card(tmp_path: Path) -> None:
    config = wallet.apple_config(settings_from(make_apple_files(tmp_path)))
    assert config is not None
    files = unpack(wallet.build_pkpass(config, CARD, web_url="https://shop.example/portal"))
    assert {"pass.json", "manifest.json", "signature", "icon.png"} <= set(files)
    manifest = json.loads(files["manifest.json"])
    assert set(manifest) == set(files) - {"manifest.json", "signature"}
    for name, digest in manifest.items():
        assert hashlib.sha1(files[name]).hexdigest() == digest, name
    assert files["icon.png"].startswith(b"\x89PNG\r\n\x1a\n")
    p = json.loads(files["pass.json"])
    assert p["passTypeIdentifier"] == "pass.example.patron" and p["teamIdentifier"] == "ABCDE12345"
    assert p["serialNumber"] == "mem_123" and p["formatVersion"] == 1
    assert p["barcodes"][0] == {
        "format": "PKBarcodeFormatQR",
        "message": "PT1234567890",
        "messageEncoding": "iso-8859-1",
        "altText": "PT1234567890",
    }
    assert p["storeCard"]["primaryFields"][0] == {"key": "points", "label": "beans", "value": 1250}
    assert {"key": "tier", "label": "Tier", "value": "Gold"} in p["storeCard"]["secondaryFields"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_signature_verifies_with_openssl_and_fails_when_tampered(tmp_path: Path) -> None:
    env = make_apple_files(tmp_path, password="s3cret")
    config = wallet.apple_config(settings_from(env))
    assert config is not None
    files = unpack(wallet.build_pkpass(config, CARD, web_url="https://shop.example/portal"))
    ok = openssl_verify(tmp_path, files, env["PATRON_APPLE_WWDR_CERT"])
    assert ok.returncode == 0, ok.stderr.decode()
    tampered = {**files, "manifest.json": files["manifest.json"].replace(b'"', b" ", 1)}
    bad = openssl_verify(tmp_path, tampered, env["PATRON_APPLE_WWDR_CERT"])
    assert bad.returncode != 0


def test_the_signature_is_detached_and_carries_both_certificates(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import pkcs7

    config = wallet.apple_config(settings_from(make_apple_files(tmp_path)))
    assert config is not None
    signature = wallet.sign_manifest(config, b'{"pass.json": "00"}')
    certs = pkcs7.load_der_pkcs7_certificates(signature)
    subjects = {c.subject.rfc4514_string() for c in certs}
    assert subjects == {"CN=Pass Type ID: pass.example.patron", "CN=Test WWDR CA"}
    assert b'{"pass.json": "00"}' not in signature  # detached: the manifest is not inside


def test_the_google_save_link_is_a_jwt_signed_by_the_service_account(tmp_path: Path) -> None:
    env, public = make_google_file(tmp_path)
    config = wallet.google_config(settings_from(env))
    assert config is not None
    url = wallet.google_save_url(config, CARD, origin="https://shop.example/")
    assert url.startswith("https://pay.google.com/gp/v/save/")
    claims = decode_jwt(url.removeprefix("https://pay.google.com/gp/v/save/"), public)
    assert claims["iss"] == "wallet@patron-test.iam.gserviceaccount.com"
    assert claims["aud"] == "google" and claims["typ"] == "savetowallet"
    assert claims["origins"] == ["https://shop.example"]
    (obj,) = claims["payload"]["loyaltyObjects"]
    assert obj["id"] == "3388000000012345678.mem_123"
    assert obj["classId"] == "3388000000012345678.patron"
    assert obj["barcode"] == {"type": "QR_CODE", "value": "PT1234567890", "alternateText": "PT1234567890"}
    assert obj["loyaltyPoints"] == {"label": "beans", "balance": {"int": 1250}}
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(InvalidSignature):
        decode_jwt(url.removeprefix(wallet.GOOGLE_SAVE_URL), other)


def test_a_key_file_that_is_not_a_service_account_is_reported(tmp_path: Path) -> None:
    (tmp_path / "key.json").write_text('{"hello": "world"}')
    env = {"PATRON_GOOGLE_WALLET_ISSUER_ID": "1", "PATRON_GOOGLE_WALLET_KEY_FILE": str(tmp_path / "key.json")}
    with pytest.raises(InvalidInput, match="service account"):
        wallet.google_config(settings_from(env))
