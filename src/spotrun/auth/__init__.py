"""Authentication: AWS Signature Version 4 over access keys kept in the store.

``sigv4`` verifies (server) and makes (client) signatures and knows nothing of storage;
``credentials`` reads the local CLI's ``credentials.json``. Both are light: the CLI and the
agent import them without the store. The server's side needs the store: ``keys`` keeps
accounts and users' access keys and gives the verifier its ``lookup``; ``instance_keys``
mints, scopes and revokes the credentials agents sign their reports with. Import those two
modules by name.
"""

from spotrun.auth.credentials import read_credentials
from spotrun.auth.sigv4 import AuthError, Principal, SigV4HttpxAuth, sign, verify

__all__ = [
    "AuthError",
    "Principal",
    "SigV4HttpxAuth",
    "read_credentials",
    "sign",
    "verify",
]
