"""Seeds objects into the vault with the official Azure SDK for Python (not through our client).

Env: VAULT_URL, AUTHORITY, TENANT_ID, CLIENT_ID, CLIENT_SECRET, REQUESTS_CA_BUNDLE, PFX_B64_FILE.
Prints one line per object: "<name> <version>".
"""
import base64, os
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient
from azure.keyvault.certificates import CertificateClient

cred = ClientSecretCredential(os.environ["TENANT_ID"], os.environ["CLIENT_ID"], os.environ["CLIENT_SECRET"],
                              authority=os.environ["AUTHORITY"], disable_instance_discovery=True)
url = os.environ["VAULT_URL"]
secrets = SecretClient(url, cred)
certs = CertificateClient(url, cred)

s = secrets.set_secret("py-secret", "value-from-python-sdk")
print("py-secret", s.properties.version)
s = secrets.set_secret("py-b64", base64.b64encode(b"\x00\x01binary\xff").decode())
print("py-b64", s.properties.version)
pfx = base64.b64decode(open(os.environ["PFX_B64_FILE"]).read())
c = certs.import_certificate("py-chain", pfx)
print("py-chain", c.properties.version)
