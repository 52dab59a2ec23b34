"""Drives the official Azure SDK for Python against keyvault-emulator.

Usage: kv_sdk.py <scenario>; configuration comes from the environment (set by the Rust test):
  VAULT_URL, AUTHORITY, TENANT_ID, CLIENT_ID, CLIENT_SECRET, REQUESTS_CA_BUNDLE,
  plus scenario-specific variables (ASSERTION, AZURE_POD_IDENTITY_AUTHORITY_HOST, MI_CLIENT_ID,
  WORK_DIR and AZURE_KUBERNETES_TOKEN_PROXY / _SNI_NAME / _CA_FILE for identity binding).
Each scenario asserts what the SDK returns and exits non-zero with a message on the first failure.
The last stdout line is a JSON summary the Rust test can check further.
"""

import base64
import json
import os
import sys

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import (
    ClientAssertionCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from azure.keyvault.certificates import CertificateClient, CertificateContentType, CertificatePolicy
from azure.keyvault.keys import JsonWebKey, KeyClient, KeyType
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
import datetime

VAULT_URL = os.environ.get("VAULT_URL", "")
AUTHORITY = os.environ.get("AUTHORITY", "")
TENANT = os.environ.get("TENANT_ID", "")
CLIENT_ID = os.environ.get("CLIENT_ID", "")
CLIENT_SECRET = os.environ.get("CLIENT_SECRET", "")


def check(cond, msg):
    if not cond:
        print(f"FAILED: {msg}", file=sys.stderr)
        sys.exit(1)


def secret_credential(secret=None):
    # Instance discovery of a non-Microsoft authority would call login.microsoftonline.com;
    # the emulator serves tenant discovery, so turn instance discovery off (as a user would).
    # INSTANCE_DISCOVERY=1 keeps MSAL's default (used with the emulator on port 443 posing as
    # login.microsoftonline.com in a private hosts file).
    return ClientSecretCredential(
        TENANT, CLIENT_ID, secret if secret is not None else CLIENT_SECRET,
        authority=AUTHORITY, disable_instance_discovery=os.environ.get("INSTANCE_DISCOVERY") != "1",
    )


def b64url_int(b):
    return int.from_bytes(b, "big")


# === scenarios ===

def scenario_secrets():
    client = SecretClient(VAULT_URL, secret_credential())
    s1 = client.set_secret("sdk-secret", "value-one", content_type="text/plain", tags={"a": "b"})
    check(s1.value == "value-one", "set_secret echoes the value")
    check(s1.properties.content_type == "text/plain", "content type round-trips")
    s2 = client.set_secret("sdk-secret", "value-two")
    got = client.get_secret("sdk-secret")
    check(got.value == "value-two" and got.properties.version == s2.properties.version, "latest version wins")
    old = client.get_secret("sdk-secret", s1.properties.version)
    check(old.value == "value-one", "get by version")
    names = [p.name for p in client.list_properties_of_secrets()]
    check("sdk-secret" in names, f"list secrets includes sdk-secret: {names}")
    versions = list(client.list_properties_of_secret_versions("sdk-secret"))
    check(len(versions) == 2, f"two versions listed, got {len(versions)}")
    upd = client.update_secret_properties("sdk-secret", s2.properties.version, enabled=False, tags={"x": "y"})
    check(upd.enabled is False and upd.tags == {"x": "y"}, "update attributes")
    try:
        client.get_secret("sdk-secret")
        check(False, "a disabled secret must not be readable")
    except HttpResponseError as e:
        check(e.status_code == 403, f"disabled -> 403, got {e.status_code}")
        check(e.error is not None and e.error.code == "Forbidden", f"error code Forbidden, got {e.error and e.error.code}")
    try:
        client.get_secret("does-not-exist")
        check(False, "missing secret must raise")
    except ResourceNotFoundError as e:
        check(e.status_code == 404 and e.error.code == "SecretNotFound", f"404 SecretNotFound, got {e.error and e.error.code}")
    seeded = client.get_secret("seeded")
    check(seeded.value == "from-seed", "seeded secret readable")
    # Soft delete, as Key Vault does it: the poller waits for the deleted secret to appear.
    client.set_secret("to-delete", "bye")
    deleted = client.begin_delete_secret("to-delete", _polling_interval=0.1).result()
    check(deleted.name == "to-delete" and deleted.recovery_id and deleted.deleted_date, "deleted secret with recovery id")
    check(client.get_deleted_secret("to-delete").name == "to-delete", "get_deleted_secret")
    try:
        client.set_secret("to-delete", "again")
        check(False, "a deleted name cannot be reused before purge")
    except HttpResponseError as e:
        check(e.status_code == 409, f"409 Conflict, got {e.status_code}")
    recovered = client.begin_recover_deleted_secret("to-delete", _polling_interval=0.1).result()
    check(recovered.name == "to-delete" and client.get_secret("to-delete").value == "bye", "recovered")
    client.begin_delete_secret("to-delete", _polling_interval=0.1).result()
    client.purge_deleted_secret("to-delete")
    client.set_secret("to-delete", "reborn")
    check(client.get_secret("to-delete").value == "reborn", "name reusable after purge")
    print(json.dumps({"versions": [s1.properties.version, s2.properties.version]}))


def make_chain():
    """Root CA -> intermediate -> leaf (RSA leaf key)."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def build(subject, issuer, pub, signer, ca, issuer_pub):
        b = (
            x509.CertificateBuilder()
            .subject_name(name(subject)).issuer_name(name(issuer))
            .public_key(pub).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_pub), critical=False)
        )
        return b.sign(signer, hashes.SHA256())

    root_key = ec.generate_private_key(ec.SECP256R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = build("test root", "test root", root_key.public_key(), root_key, True, root_key.public_key())
    inter = build("test intermediate", "test root", inter_key.public_key(), root_key, True, root_key.public_key())
    leaf = build("leaf.example", "test intermediate", leaf_key.public_key(), inter_key, False, inter_key.public_key())
    return leaf_key, leaf, inter, root


def der(c):
    return c.public_bytes(serialization.Encoding.DER)


def scenario_certs():
    cred = secret_credential()
    certs = CertificateClient(VAULT_URL, cred)
    secrets = SecretClient(VAULT_URL, cred)
    leaf_key, leaf, inter, root = make_chain()

    # --- PFX with a chain, password-protected with modern PBES2/AES (what cryptography writes) ---
    pfx = pkcs12.serialize_key_and_certificates(
        b"leaf", leaf_key, leaf, [inter, root], serialization.BestAvailableEncryption(b"import-pw")
    )
    imported = certs.import_certificate("pfx-chain", pfx, password="import-pw")
    check(imported.cer == der(leaf), "certificate client returns the leaf as cer")
    got = certs.get_certificate("pfx-chain")
    check(got.cer == der(leaf) and got.properties.version == imported.properties.version, "get_certificate")
    check(got.secret_id and got.key_id, "sid and kid are linked")
    check(got.properties.x509_thumbprint == leaf.fingerprint(hashes.SHA1()), "x5t is the SHA-1 thumbprint")
    backing = secrets.get_secret("pfx-chain")
    check(backing.properties.content_type == "application/x-pkcs12", f"content type, got {backing.properties.content_type}")
    check(backing.properties.managed is True, "backing secret is managed")
    check(backing.properties.key_id and backing.properties.key_id.endswith("/keys/pfx-chain/" + imported.properties.version), "backing secret kid links the key")
    raw = base64.b64decode(backing.value)
    for pw in (None, b""):
        key, cert, extra = pkcs12.load_key_and_certificates(raw, pw)
        check(cert is not None and der(cert) == der(leaf), "PFX leaf")
        check([der(c) for c in extra] == [der(inter), der(root)], "PFX chain in order")
        check(key.private_numbers() == leaf_key.private_numbers(), "PFX private key")
    pfx_path = os.environ.get("PFX_OUT")
    if pfx_path:
        with open(pfx_path, "wb") as f:
            f.write(raw)

    # --- a legacy PFX: RC2-40 certificate bag, 3DES key (Windows, `openssl pkcs12 -export -legacy`) ---
    legacy_path = os.environ.get("LEGACY_PFX")
    if legacy_path:
        with open(legacy_path, "rb") as f:
            legacy = f.read()
        with open(os.environ["LEGACY_PFX_CERT"], "rb") as f:
            legacy_cert = f.read()
        legacy_pw = os.environ["LEGACY_PFX_PASSWORD"]
        imported_legacy = certs.import_certificate("pfx-legacy", legacy, password=legacy_pw)
        check(imported_legacy.cer == legacy_cert, "RC2-40 PFX imports with its password")
        try:
            certs.import_certificate("pfx-legacy-wrong", legacy, password="not-the-password")
            check(False, "RC2-40 PFX with a wrong password is refused")
        except HttpResponseError as e:
            check(e.status_code == 400 and "wrong password" in str(e), f"wrong password answer: {e}")

    # --- PEM bundle (key + leaf + chain) as application/x-pem-file ---
    pem = leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pem += b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, inter, root))
    policy = CertificatePolicy.get_default()
    policy._content_type = CertificateContentType.pem
    imported_pem = certs.import_certificate("pem-chain", pem, policy=policy)
    check(imported_pem.cer == der(leaf), "PEM import returns the leaf")
    pem_secret = secrets.get_secret("pem-chain")
    check(pem_secret.properties.content_type == "application/x-pem-file", f"PEM content type, got {pem_secret.properties.content_type}")
    check(pem_secret.value.startswith("-----BEGIN PRIVATE KEY-----"), "PEM secret starts with the key")
    blocks = x509.load_pem_x509_certificates(pem_secret.value.encode())
    check([der(c) for c in blocks] == [der(leaf), der(inter), der(root)], "PEM chain in order")
    k = serialization.load_pem_private_key(pem_secret.value.encode(), None)
    check(k.private_numbers() == leaf_key.private_numbers(), "PEM private key")

    # --- self-signed creation through the SDK poller ---
    created = certs.begin_create_certificate("self-signed", CertificatePolicy.get_default(), _polling_interval=0.2).result()
    check(created.cer, "created certificate has cer")
    parsed = x509.load_der_x509_certificate(created.cer)
    check(isinstance(parsed.public_key(), rsa.RSAPublicKey) and parsed.public_key().key_size == 2048, "default policy: RSA 2048")
    ss = base64.b64decode(secrets.get_secret("self-signed").value)
    k2, c2, _ = pkcs12.load_key_and_certificates(ss, None)
    check(der(c2) == created.cer, "self-signed PFX holds the cert")
    versions = list(certs.list_properties_of_certificate_versions("pfx-chain"))
    check(len(versions) == 1, "one version")
    print(json.dumps({"pfx_version": imported.properties.version}))


def scenario_keys():
    client = KeyClient(VAULT_URL, secret_credential())
    sizes = [int(s) for s in os.environ.get("RSA_SIZES", "2048,3072,4096").split(",")]
    for size in sizes:
        k = client.create_rsa_key(f"rsa-{size}", size=size)
        check(k.key_type == KeyType.rsa, "kty RSA")
        check(len(k.key.n) == size // 8, f"modulus of {size} bits, got {len(k.key.n) * 8}")
        check(b64url_int(k.key.e) == 65537, "e = 65537")
        again = client.get_key(f"rsa-{size}", k.properties.version)
        check(again.key.n == k.key.n, "get by version")
    for crv, n in (("P-256", 32), ("P-384", 48), ("P-521", 66)):
        k = client.create_ec_key(f"ec-{crv[2:]}", curve=crv)
        check(k.key.crv == crv and len(k.key.x) == n and len(k.key.y) == n, f"EC {crv} coordinates")
        check(sorted(k.key_operations) == ["sign", "verify"], f"EC key_ops {k.key_operations}")
    # import RSA and EC private keys as JWK
    rk = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rn = rk.private_numbers()

    def i2b(i, n=None):
        n = n or (i.bit_length() + 7) // 8
        return i.to_bytes(n, "big")

    jwk = JsonWebKey(kty="RSA", n=i2b(rn.public_numbers.n), e=i2b(rn.public_numbers.e), d=i2b(rn.d),
                     p=i2b(rn.p), q=i2b(rn.q), dp=i2b(rn.dmp1), dq=i2b(rn.dmq1), qi=i2b(rn.iqmp))
    imp = client.import_key("imported-rsa", jwk)
    check(imp.key.n == i2b(rn.public_numbers.n), "imported RSA modulus")
    ek = ec.generate_private_key(ec.SECP384R1())
    en = ek.private_numbers()
    jwk = JsonWebKey(kty="EC", crv="P-384", x=i2b(en.public_numbers.x, 48), y=i2b(en.public_numbers.y, 48), d=i2b(en.private_value, 48))
    imp = client.import_key("imported-ec", jwk)
    check(imp.key.x == i2b(en.public_numbers.x, 48), "imported EC x")
    client.create_rsa_key("rsa-2048", size=2048)
    versions = list(client.list_properties_of_key_versions("rsa-2048"))
    check(len(versions) == 2, f"two versions of rsa-2048, got {len(versions)}")
    print(json.dumps({"ok": True}))


def scenario_get_secret():
    """Reads one secret with the client-secret credential (used around fault injection)."""
    client = SecretClient(VAULT_URL, secret_credential())
    name = os.environ.get("SECRET_NAME", "seeded")
    print(json.dumps({"value_len": len(client.get_secret(name).value)}))


def scenario_wrong_secret():
    client = SecretClient(VAULT_URL, secret_credential("not-the-secret"))
    try:
        client.get_secret("seeded")
        check(False, "a wrong client secret must fail")
    except ClientAuthenticationError as e:
        check("AADSTS7000215" in str(e), f"AADSTS7000215 in message: {e}")
    print(json.dumps({"ok": True}))


def scenario_no_access():
    client = SecretClient(VAULT_URL, secret_credential())
    try:
        client.get_secret("seeded")
        check(False, "an identity without access must get 403")
    except HttpResponseError as e:
        check(e.status_code == 403, f"status 403, got {e.status_code}")
        check(not isinstance(e, ClientAuthenticationError), "403 is not an authentication error")
    print(json.dumps({"ok": True}))


def assertion_credential():
    assertion = os.environ["ASSERTION"]
    return ClientAssertionCredential(TENANT, CLIENT_ID, lambda: assertion, authority=AUTHORITY,
                                     disable_instance_discovery=True)


def scenario_listing():
    """Lists a vault seeded with tagged, disabled, expired and certificate-backed objects, three
    items a page, and reports what the SDK saw (the Rust test checks it and the page count)."""
    secrets = SecretClient(VAULT_URL, secret_credential())
    pages = 0
    seen = {}
    for page in secrets.list_properties_of_secrets(max_page_size=3).by_page():
        pages += 1
        items = list(page)
        check(len(items) <= 3, f"a page holds at most max_page_size items, got {len(items)}")
        for p in items:
            seen[p.name] = {
                "enabled": p.enabled,
                "tags": p.tags,
                "managed": p.managed,
                "content_type": p.content_type,
                "expires": int(p.expires_on.timestamp()) if p.expires_on else None,
                "not_before": int(p.not_before.timestamp()) if p.not_before else None,
                "version": p.version,
            }
    keys = KeyClient(VAULT_URL, secret_credential())
    key_items = {k.name: {"tags": k.tags, "managed": k.managed, "enabled": k.enabled}
                 for k in keys.list_properties_of_keys(max_page_size=2)}
    certs = CertificateClient(VAULT_URL, secret_credential())
    cert_items = {c.name: {"tags": c.tags, "enabled": c.enabled}
                  for c in certs.list_properties_of_certificates(max_page_size=2)}
    print(json.dumps({"pages": pages, "secrets": seen, "keys": key_items, "certificates": cert_items}))


def scenario_assertion():
    client = SecretClient(VAULT_URL, assertion_credential())
    print(json.dumps({"value_len": len(client.get_secret("seeded").value)}))


def scenario_assertion_rejected():
    client = SecretClient(VAULT_URL, assertion_credential())
    try:
        client.get_secret("seeded")
        check(False, "the assertion must be refused")
    except ClientAuthenticationError as e:
        expected = os.environ.get("EXPECT_CODE", "")
        check(expected in str(e), f"{expected} in message: {e}")
    print(json.dumps({"ok": True}))


def identity_binding_credential():
    # AKS identity binding: the token file holds the api://AKSIdentityBinding token; the token
    # proxy comes from AZURE_KUBERNETES_TOKEN_PROXY / _SNI_NAME / _CA_FILE (set by the Rust test).
    path = os.path.join(os.environ["WORK_DIR"], "ib-token")
    with open(path, "w") as f:
        f.write(os.environ["ASSERTION"])
    return WorkloadIdentityCredential(
        tenant_id=TENANT, client_id=CLIENT_ID, token_file_path=path, authority=AUTHORITY,
        disable_instance_discovery=True, enable_azure_proxy=True,
    )


def scenario_identity_binding():
    client = SecretClient(VAULT_URL, identity_binding_credential())
    print(json.dumps({"value_len": len(client.get_secret("seeded").value)}))


def scenario_identity_binding_rejected():
    client = SecretClient(VAULT_URL, identity_binding_credential())
    try:
        client.get_secret("seeded")
        check(False, "the identity-binding token must be refused")
    except ClientAuthenticationError as e:
        expected = os.environ.get("EXPECT_CODE", "")
        check(expected in str(e), f"{expected} in message: {e}")
    print(json.dumps({"ok": True}))


def scenario_managed_identity():
    mi = os.environ.get("MI_CLIENT_ID")
    cred = ManagedIdentityCredential(client_id=mi) if mi else ManagedIdentityCredential()
    client = SecretClient(VAULT_URL, cred)
    print(json.dumps({"value_len": len(client.get_secret("seeded").value)}))


SCENARIOS = {name[len("scenario_"):].replace("_", "-"): fn for name, fn in globals().items() if name.startswith("scenario_")}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        print(f"usage: kv_sdk.py <{'|'.join(sorted(SCENARIOS))}>", file=sys.stderr)
        sys.exit(2)
    SCENARIOS[sys.argv[1]]()
