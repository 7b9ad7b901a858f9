"""Authentication: AWS Signature Version 4 over access keys kept in the store.

``sigv4`` verifies (server) and makes (client) signatures and knows nothing of storage;
``keys`` keeps accounts and access keys and gives the verifier its ``lookup``.
"""

from spotrun.auth.keys import (
    Account,
    KeyInfo,
    KeyRing,
    NewKey,
    default_credentials,
    read_credentials,
)
from spotrun.auth.sigv4 import AuthError, Principal, SigV4HttpxAuth, sign, verify

__all__ = [
    "Account",
    "AuthError",
    "KeyInfo",
    "KeyRing",
    "NewKey",
    "Principal",
    "SigV4HttpxAuth",
    "default_credentials",
    "read_credentials",
    "sign",
    "verify",
]
