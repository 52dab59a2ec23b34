#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (crates/fuzz/corpus/<target>/) from readable
examples and the pfx crate's test vectors. Deterministic; rerun after changing an input format:
    python3 crates/fuzz/corpus/make_seeds.py
"""
import base64, json, os, random, shutil

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "..", "pfx", "tests", "fixtures")
rnd = random.Random(14)


def fixture(name):
    with open(os.path.join(FIX, name), "rb") as f:
        return f.read()


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def j(v):
    return json.dumps(v, separators=(",", ":"))


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def der_len(b, i):
    n = b[i]
    if n < 0x80:
        return n, i + 1
    k = n & 0x7F
    return int.from_bytes(b[i + 1:i + 1 + k], "big"), i + 1 + k


def der_children(b, start, end):
    out, i = [], start
    while i < end:
        tag = b[i]
        n, body = der_len(b, i + 1)
        out.append((tag, body, body + n))
        i = body + n
    return out


def auth_safe(pfx):
    """The octets of PFX.authSafe.content ([0] EXPLICIT OCTET STRING)."""
    _, body, end = der_children(pfx, 0, len(pfx))[0]
    kids = der_children(pfx, body, end)
    _, ci_body, ci_end = kids[1]
    ci = der_children(pfx, ci_body, ci_end)
    _, ex_body, ex_end = ci[1]
    _, os_body, os_end = der_children(pfx, ex_body, ex_end)[0]
    return pfx[os_body:os_end]


def rand(n):
    return bytes(rnd.randrange(256) for _ in range(n))


for t in ["params", "volume_context", "pfx", "keyvault_json", "entra_json", "csi_publish", "emulator_http"]:
    shutil.rmtree(os.path.join(HERE, t), ignore_errors=True)

# === params: mode 0 = attributes \0 secrets; odd = structured ===
POD = {"csi.storage.k8s.io/pod.name": "web", "csi.storage.k8s.io/pod.namespace": "default"}
OBJ_UPSTREAM = "array:\n  - |\n    objectName: secret1\n    objectType: secret\n    objectVersion: \"\"\n  - |\n    objectName: key1\n    objectType: key\n  - |\n    objectName: cert1\n    objectType: cert\n    objectAlias: tls.crt\n"
OBJ_RICH = "array:\n  - |\n    objectName: pfx\n    objectType: secret\n    objectFormat: PFX\n    objectEncoding: base64\n    filePermission: \"0600\"\n  - |\n    objectName: hist\n    objectType: secret\n    objectVersionHistory: 3\n    objectAlias: dir/hist\n  - |\n    objectName: hexed\n    objectType: secret\n    objectEncoding: hex\n"
OBJ_LIST = "- objectName: a\n  objectType: secret\n- objectName: b\n  objectType: key\n"
OBJ_BEYOND = "array:\n  - |\n    objectNamePrefix: app-\n    objectTags: {env: prod}\n    objectType: secret\n    objectAlias: app\n  - |\n    objectName: \"*\"\n    objectType: cert\n    objectAlias: certs\n    optional: \"true\"\n  - |\n    objectName: db\n    objectType: secret\n    jmesPath:\n      - path: username\n        objectAlias: db-user\n"
TEMPLATES = "- path: app.env\n  template: |\n    USER={{ files[\"db-user\"] }}\n"
OBJ_MAPS = "array:\n  - objectName: a\n    objectType: secret\n    filePermission: '0o400'\n"
TOKENS = j({"api://AzureADTokenExchange": {"token": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "expirationTimestamp": "2030-01-01T00:00:00Z"}})
SP = j({"clientid": "app", "clientsecret": "sekrit"})
cases = {
    "sp-upstream": ({**POD, "keyvaultName": "kv1", "tenantId": "tid", "objects": OBJ_UPSTREAM}, SP),
    "wi-rich": ({**POD, "keyvaultName": "my-vault", "tenantID": "tid", "clientID": "cid", "csi.storage.k8s.io/serviceAccount.tokens": TOKENS, "objects": OBJ_RICH}, "null"),
    "vmmi-list": ({**POD, "keyvaultName": "kv1", "tenantId": "tid", "useVMManagedIdentity": "true", "userAssignedIdentityID": "uid", "objects": OBJ_LIST}, "null"),
    "podid-maps": ({**POD, "keyvaultName": "kv1", "tenantId": "tid", "usePodIdentity": "true", "cloudName": "AzureChinaCloud", "objects": OBJ_MAPS}, "null"),
    "stack-cloud": ({**POD, "keyvaultName": "kv1", "tenantId": "tid", "cloudName": "AzureStackCloud", "cloudEnvFileName": "/etc/kubernetes/azurestack.json", "objects": OBJ_UPSTREAM, "secretProviderClass": "kv"}, SP),
    "beyond-upstream": ({**POD, "keyvaultName": "kv1", "tenantId": "tid", "objects": OBJ_BEYOND, "templates": TEMPLATES}, SP),
    "bad-objects": ({**POD, "keyvaultName": "kv1", "tenantId": "tid", "objects": "array:\n  - |\n    objectName: ../x\n    objectType: secrett\n"}, SP),
}
for name, (attrs, secrets) in cases.items():
    write("params", name, b"\x00" + j(attrs).encode() + b"\x00" + secrets.encode())
for i in range(4):
    write("params", f"structured-{i}", bytes([1]) + rand(200))

# === volume_context: mode 0 = context \0 secrets \0 parameters; odd = structured ===
CTX = {"secretProviderClass": "kv", "csi.storage.k8s.io/pod.name": "web", "csi.storage.k8s.io/pod.namespace": "default",
       "csi.storage.k8s.io/pod.uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "csi.storage.k8s.io/serviceAccount.name": "default",
       "csi.storage.k8s.io/ephemeral": "true", "csi.storage.k8s.io/serviceAccount.tokens": TOKENS}
PARAMS = {"keyvaultName": "kv1", "tenantId": "tid", "clientID": "cid", "objects": OBJ_UPSTREAM}
write("volume_context", "kubelet-wi", b"\x00" + j(CTX).encode() + b"\x00\x00" + j(PARAMS).encode())
write("volume_context", "kubelet-sp", b"\x00" + j({k: v for k, v in CTX.items() if "tokens" not in k}).encode() + b"\x00" + SP.encode() + b"\x00" + j({**PARAMS, "clientID": ""}).encode())
write("volume_context", "tokens-in-secrets", b"\x00" + j(CTX).encode() + b"\x00" + j({"csi.storage.k8s.io/serviceAccount.tokens": TOKENS}).encode() + b"\x00" + j(PARAMS).encode())
write("volume_context", "no-pod-info", b"\x00" + j({"secretProviderClass": "kv"}).encode() + b"\x00\x00{}")
for i in range(4):
    write("volume_context", f"structured-{i}", bytes([1]) + rand(160))

# === pfx ===
empty_pw = ["sha256-mac.pfx", "pbes2-empty-password.pfx"]
pw = {"rc2-40.pfx": "fixture-pw", "3des.pfx": "fixture-pw", "pbes2-aes256.pfx": "fixture-pw",
      "pbes2-aes128-sha512-mac.pfx": "fixture-pw", "pbes2-aes192-sha384-mac.pfx": "fixture-pw",
      "rc2-40-utf8-password.pfx": "pässwörd-✓", "pbes2-utf8-password.pfx": "pässwörd-✓"}
for f in empty_pw:
    write("pfx", "0-" + f, b"\x00" + fixture(f))
    write("pfx", "3-" + f, b"\x03" + fixture(f))
    write("pfx", "2-" + f, b"\x02" + auth_safe(fixture(f)))
for f, p in pw.items():
    pb = p.encode()
    write("pfx", "1-" + f, b"\x01" + bytes([len(pb)]) + pb + fixture(f))
    write("pfx", "2-" + f, b"\x02" + auth_safe(fixture(f)))

# === keyvault_json: mode, settings, body ===
KV = "https://kv1.vault.azure.net"
pfx_b64 = base64.b64encode(fixture("sha256-mac.pfx")).decode()
key_pem = fixture("key.pem").decode()
cert_pem = fixture("cert.pem").decode()
cert_der = fixture("cert.der")
secret_bodies = {
    "plain": (0, {"value": "s3cr3t", "id": f"{KV}/secrets/s/0123456789abcdef", "attributes": {"enabled": True}}),
    "base64": (2, {"value": base64.b64encode(b"\x00\x01binary").decode(), "id": f"{KV}/secrets/b/1"}),
    "hex": (4, {"value": "deadbeef", "id": f"{KV}/secrets/h/2"}),
    "pfx-pem": (0, {"value": pfx_b64, "contentType": "application/x-pkcs12", "id": f"{KV}/secrets/c/3", "kid": f"{KV}/keys/c/3"}),
    "pfx-raw": (1, {"value": pfx_b64, "contentType": "application/x-pkcs12", "id": f"{KV}/secrets/c/3", "kid": f"{KV}/keys/c/3"}),
    "pfx-split": (16, {"value": pfx_b64, "contentType": "application/x-pkcs12", "id": f"{KV}/secrets/c/3", "kid": f"{KV}/keys/c/3"}),
    "pem-split": (16, {"value": key_pem + cert_pem, "contentType": "application/x-pem-file", "id": f"{KV}/secrets/p/4", "kid": f"{KV}/keys/p/4"}),
}
for name, (settings, body) in secret_bodies.items():
    write("keyvault_json", "0-" + name, bytes([0, settings]) + j(body).encode())
ec_pub = bytes.fromhex("0401b1c0f2950f79dd7939926031 58cb14a5a8d1fd154dc0549ad03754ea0ab3b7c4328e95077ac2e8b22cbcfa48b59145c447a32b13d815870f98747d0fb4c85e".replace(" ", ""))
write("keyvault_json", "1-ec", bytes([1, 0]) + j({"key": {"kid": f"{KV}/keys/ec/5", "kty": "EC", "crv": "P-256", "x": b64url(ec_pub[1:33]), "y": b64url(ec_pub[33:])}}).encode())
n = rnd.getrandbits(2048) | (1 << 2047) | 1
write("keyvault_json", "1-rsa", bytes([1, 0]) + j({"key": {"kid": f"{KV}/keys/rsa/6", "kty": "RSA-HSM", "n": b64url(n.to_bytes(256, "big")), "e": "AQAB"}}).encode())
write("keyvault_json", "2-cert", bytes([2, 0]) + j({"id": f"{KV}/certificates/c/7", "cer": base64.b64encode(cert_der).decode(), "x5t": "abc"}).encode())
write("keyvault_json", "3-versions", bytes([3, 0]) + j({"value": [{"id": f"{KV}/secrets/s/1", "attributes": {"enabled": True, "created": 1700000000}}, {"id": f"{KV}/secrets/s/2"}], "nextLink": f"{KV}/secrets/s/versions?$skiptoken=x&api-version=7.4"}).encode())
write("keyvault_json", "3-key-versions", bytes([3, 1]) + j({"value": [{"kid": f"{KV}/keys/k/1", "attributes": {"enabled": False}}], "nextLink": None}).encode())
write("keyvault_json", "4-error", bytes([4, 0]) + j({"error": {"code": "Forbidden", "message": "The user, group or application does not have secrets get permission.", "innererror": {"code": "AccessDenied"}}}).encode())
write("keyvault_json", "5-pem", bytes([5, 0]) + (key_pem + "junk between\n" + cert_pem).encode())
write("keyvault_json", "6-chain", bytes([6, 0]) + len(cert_der).to_bytes(2, "big") + cert_der + len(cert_der).to_bytes(2, "big") + cert_der)

# === entra_json: mode, status, body ===
write("entra_json", "0-entra", bytes([0, 0]) + j({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.c2ln"}).encode())
write("entra_json", "0-imds", bytes([0, 0]) + j({"access_token": "eyJ0eXAi.e30.c2ln", "client_id": "c", "expires_in": "86399", "expires_on": "1700086399", "ext_expires_in": "86399", "not_before": "1700000000", "resource": "https://vault.azure.net", "token_type": "Bearer"}).encode())
# expiries past the clock's range (`SystemTime + Duration` panicked; fixed in entra-auth)
write("entra_json", "0-expires-on-overflow", bytes([0, 0]) + j({"access_token": "eyJ0eXAi.e30.c2ln", "expires_on": "18446744073709551615"}).encode())
write("entra_json", "0-expires-in-overflow", bytes([0, 0]) + j({"access_token": "eyJ0eXAi.e30.c2ln", "expires_in": 1.8e19}).encode())
write("entra_json", "1-nmi", bytes([1, 0]) + j({"token": {"access_token": "eyJ0eXAi.e30.c2ln", "expires_on": "1700086399", "resource": "https://vault.azure.net", "token_type": "Bearer"}, "clientid": "22222222-2222-2222-2222-222222222222"}).encode())
write("entra_json", "2-error", bytes([2, 1]) + j({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 0\r\nCorrelation ID: 1", "error_codes": [7000215]}).encode())
write("entra_json", "3-challenge", bytes([3, 0]) + b'Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net"\x00kv1.vault.azure.net')
write("entra_json", "3-scope", bytes([3, 0]) + b'Bearer authorization_uri="https://login.windows.net/t", scope="https://vault.azure.net/.default", error="invalid_token"\x00kv1.vault.azure.net')
hdr = b64url(j({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode())
claims = b64url(j({"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:default:app", "aud": ["api://AzureADTokenExchange"], "exp": 1900000000}).encode())
write("entra_json", "4-jwt", bytes([4, 0]) + f"{hdr}.{claims}.c2ln".encode())

# === csi_publish, emulator_http: structured only ===
for t, sizes in [("csi_publish", [0, 96, 256, 512]), ("emulator_http", [0, 128, 384, 768])]:
    for i, n in enumerate(sizes):
        write(t, f"structured-{i}", bytes(64) if n == 0 else rand(n))
