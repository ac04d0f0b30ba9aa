"""Wallet passes of the loyalty card: an Apple Wallet ``.pkpass`` and a Google Wallet "save" link.

Both are configured by the merchant running Patron, through the environment; where a wallet is
not configured its button is not shown and its URL answers 404.

Apple Wallet (all five needed):

- ``PATRON_APPLE_PASS_CERT``: path of the Pass Type ID certificate (PEM) from the Apple
  developer account;
- ``PATRON_APPLE_PASS_KEY``: path of its private key (PEM), ``PATRON_APPLE_PASS_KEY_PASSWORD``
  when the key is encrypted;
- ``PATRON_APPLE_WWDR_CERT``: path of Apple's WWDR intermediate certificate (PEM);
- ``PATRON_APPLE_PASS_TYPE_ID`` (``pass.com.example.loyalty``) and ``PATRON_APPLE_TEAM_ID``.

A pass is a zip of ``pass.json``, small icons, ``manifest.json`` (the SHA-1 of every other file)
and ``signature``: a detached PKCS#7 (DER) signature of the manifest by the pass certificate,
carrying the WWDR intermediate, as Apple's PassKit requires.

Google Wallet (both needed): ``PATRON_GOOGLE_WALLET_ISSUER_ID`` and
``PATRON_GOOGLE_WALLET_KEY_FILE``, the path of the service account's JSON key (``client_email``,
``private_key``). ``PATRON_GOOGLE_WALLET_CLASS_ID`` names the loyalty class the merchant created
in the Google Pay & Wallet console (default ``<issuer id>.patron``). The link is
``https://pay.google.com/gp/v/save/<jwt>``, the JWT signed RS256 with the service account's key.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from patron.domain.errors import InvalidInput

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

GOOGLE_SAVE_URL = "https://pay.google.com/gp/v/save/"


def crypto_available() -> bool:
    """Whether the ``cryptography`` package is installed: without it no wallet is offered, and
    the rest of Patron works (it is imported only when a pass is made)."""
    return find_spec("cryptography") is not None


class WalletSettings(BaseSettings):
    """The wallet part of the environment (``PATRON_*``); read when a page needs it."""

    model_config = SettingsConfigDict(env_prefix="PATRON_", extra="ignore")

    apple_pass_cert: str | None = None
    apple_pass_key: str | None = None
    apple_pass_key_password: str | None = None
    apple_wwdr_cert: str | None = None
    apple_pass_type_id: str | None = None
    apple_team_id: str | None = None
    google_wallet_issuer_id: str | None = None
    google_wallet_key_file: str | None = None
    google_wallet_class_id: str | None = None


@dataclass(frozen=True, slots=True)
class AppleConfig:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    wwdr: x509.Certificate
    pass_type_id: str
    team_id: str


@dataclass(frozen=True, slots=True)
class GoogleConfig:
    issuer_id: str
    class_id: str
    client_email: str
    key: rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class Card:
    """What a wallet pass shows: who, which program, the card number (also as the QR code) and
    the points available when the pass was made."""

    member_id: str
    card_number: str
    name: str | None
    program_name: str
    points_name: str
    points: int
    tier: str | None = None


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{what} cannot be read from {path}: {exc.strerror}") from exc


def _rsa_key(data: bytes, password: str | None, what: str) -> rsa.RSAPrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{what} is not a readable PEM private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidInput(f"{what} must be an RSA key")
    return key


def apple_config(settings: WalletSettings | None = None) -> AppleConfig | None:
    """The Apple Wallet configuration, or ``None`` when any part is missing. A part that is set
    but unreadable is :class:`InvalidInput` (a misconfiguration to report, not to hide)."""
    s = settings or WalletSettings()
    if not crypto_available():
        return None
    from cryptography import x509

    parts = (s.apple_pass_cert, s.apple_pass_key, s.apple_wwdr_cert, s.apple_pass_type_id, s.apple_team_id)
    if not all(parts):
        return None
    assert s.apple_pass_cert and s.apple_pass_key and s.apple_wwdr_cert
    assert s.apple_pass_type_id and s.apple_team_id
    try:
        cert = x509.load_pem_x509_certificate(_read(s.apple_pass_cert, "PATRON_APPLE_PASS_CERT"))
        wwdr = x509.load_pem_x509_certificate(_read(s.apple_wwdr_cert, "PATRON_APPLE_WWDR_CERT"))
    except ValueError as exc:
        raise InvalidInput(f"an Apple Wallet certificate is not readable PEM: {exc}") from exc
    key = _rsa_key(
        _read(s.apple_pass_key, "PATRON_APPLE_PASS_KEY"), s.apple_pass_key_password, "PATRON_APPLE_PASS_KEY"
    )
    return AppleConfig(cert, key, wwdr, s.apple_pass_type_id, s.apple_team_id)


def google_config(settings: WalletSettings | None = None) -> GoogleConfig | None:
    """The Google Wallet configuration, or ``None`` when the issuer id or key file is missing."""
    s = settings or WalletSettings()
    if not (s.google_wallet_issuer_id and s.google_wallet_key_file) or not crypto_available():
        return None
    try:
        account = json.loads(_read(s.google_wallet_key_file, "PATRON_GOOGLE_WALLET_KEY_FILE"))
        email, pem = str(account["client_email"]), str(account["private_key"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(
            "PATRON_GOOGLE_WALLET_KEY_FILE is not a service account key (client_email, private_key)"
        ) from exc
    issuer = s.google_wallet_issuer_id
    class_id = s.google_wallet_class_id or f"{issuer}.patron"
    return GoogleConfig(issuer, class_id, email, _rsa_key(pem.encode(), None, "the service account key"))


# Apple Wallet ------------------------------------------------------------------------------


def _png(size: int, rgb: tuple[int, int, int]) -> bytes:
    """A plain square PNG: every pass needs an icon, and Patron has no image library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def pass_json(config: AppleConfig, card: Card, *, web_url: str) -> dict[str, Any]:
    """The ``pass.json`` of a store card: points on the front, the card number as a QR code."""
    fields: dict[str, Any] = {
        "primaryFields": [{"key": "points", "label": card.points_name, "value": card.points}],
        "secondaryFields": [{"key": "member", "label": "Member", "value": card.name or "Member"}],
        "auxiliaryFields": [{"key": "card", "label": "Card number", "value": card.card_number}],
        "backFields": [
            {"key": "portal", "label": "Your membership", "value": web_url},
            {
                "key": "note",
                "label": "Points",
                "value": "The balance shown is the one when this pass was added; the portal is up to date.",
            },
        ],
    }
    if card.tier:
        fields["secondaryFields"].append({"key": "tier", "label": "Tier", "value": card.tier})
    barcode = {
        "format": "PKBarcodeFormatQR",
        "message": card.card_number,
        "messageEncoding": "iso-8859-1",
        "altText": card.card_number,
    }
    return {
        "formatVersion": 1,
        "passTypeIdentifier": config.pass_type_id,
        "teamIdentifier": config.team_id,
        "serialNumber": card.member_id,
        "organizationName": card.program_name,
        "description": f"{card.program_name} card",
        "logoText": card.program_name,
        "foregroundColor": "rgb(255, 255, 255)",
        "labelColor": "rgb(214, 228, 245)",
        "backgroundColor": "rgb(18, 53, 91)",
        "barcodes": [barcode],
        "barcode": barcode,  # iOS 8 and older read only this one
        "storeCard": fields,
    }


def sign_manifest(config: AppleConfig, manifest: bytes) -> bytes:
    """A detached PKCS#7 signature (DER) of ``manifest``, carrying the WWDR intermediate."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(manifest)
        .add_signer(config.cert, config.key, hashes.SHA256())
        .add_certificate(config.wwdr)
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])
    )


def build_pkpass(config: AppleConfig, card: Card, *, web_url: str) -> bytes:
    """The ``.pkpass`` file (a zip) for ``card``."""
    blue = (18, 53, 91)
    files = {
        "pass.json": json.dumps(pass_json(config, card, web_url=web_url), ensure_ascii=False).encode(),
        "icon.png": _png(29, blue),
        "icon@2x.png": _png(58, blue),
        "icon@3x.png": _png(87, blue),
    }
    manifest = json.dumps(
        {name: hashlib.sha1(data).hexdigest() for name, data in files.items()},
        sort_keys=True,
    ).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("manifest.json", manifest)
        z.writestr("signature", sign_manifest(config, manifest))
    return out.getvalue()


def pass_filename(card: Card) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", card.card_number).strip("-") + ".pkpass"


# Google Wallet -----------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(key: rsa.RSAPrivateKey, claims: dict[str, Any]) -> str:
    """A compact JWT signed RS256 (RSASSA-PKCS1-v1_5 with SHA-256)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    signing_input = f"{header}.{body}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{body}.{_b64url(signature)}"


def _object_suffix(member_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", member_id)


def google_claims(config: GoogleConfig, card: Card, *, origin: str, now: int | None = None) -> dict[str, Any]:
    """The claims of a "save to Google Wallet" JWT: one loyalty object of the merchant's class."""
    obj: dict[str, Any] = {
        "id": f"{config.issuer_id}.{_object_suffix(card.member_id)}",
        "classId": config.class_id,
        "state": "ACTIVE",
        "accountId": card.card_number,
        "accountName": card.name or card.card_number,
        "barcode": {"type": "QR_CODE", "value": card.card_number, "alternateText": card.card_number},
        "loyaltyPoints": {"label": card.points_name, "balance": {"int": card.points}},
    }
    return {
        "iss": config.client_email,
        "aud": "google",
        "typ": "savetowallet",
        "iat": int(time.time()) if now is None else now,
        "origins": [origin.rstrip("/")],
        "payload": {"loyaltyObjects": [obj]},
    }


def google_save_url(config: GoogleConfig, card: Card, *, origin: str) -> str:
    return GOOGLE_SAVE_URL + sign_jwt(config.key, google_claims(config, card, origin=origin))
