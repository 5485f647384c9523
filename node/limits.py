"""[core] The bounds on one input, in one place (documented in the README, "Input limits").

The CLI's file reading and the node's gRPC server share :data:`MAX_INPUT_BYTES`, so a file
the CLI accepts is never refused by the node's message limit; the rest bound the work of
reading what fits.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "GRPC_MAX_MESSAGE_BYTES",
    "MAX_DER_DEPTH",
    "MAX_INPUT_BYTES",
    "MAX_KDF_ITERATIONS",
    "MAX_KDF_WORK",
    "MAX_PEM_BLOCKS",
    "MAX_SCRYPT_N",
    "MAX_SCRYPT_P",
    "MAX_SCRYPT_R",
    "PARSE_CPU_SECONDS",
    "PARSE_DEADLINE_SECONDS",
    "PARSE_MEMORY_BYTES",
]

#: largest file (and sum of files of one import) certsync reads; no certificate, key,
#: bundle or PKCS#12 an admin meets is anywhere near it
MAX_INPUT_BYTES: Final = 8 * 1024 * 1024
#: the node's gRPC send/receive limit: the files of one import plus room for the request
GRPC_MAX_MESSAGE_BYTES: Final = MAX_INPUT_BYTES + 1024 * 1024
#: PEM blocks per file (the Mozilla root bundle has about 150)
MAX_PEM_BLOCKS: Final = 4096
#: nesting depth of DER/BER elements (a PKCS#12 needs about 12)
MAX_DER_DEPTH: Final = 40
#: largest iteration count of any one KDF or MAC: the JDK's PKCS12KeyStore.MAX_ITERATION_COUNT,
#: above the highest count OWASP recommends (1 300 000 for PBKDF2-HMAC-SHA1)
MAX_KDF_ITERATIONS: Final = 5_000_000
#: the SUM of all key-derivation work one input may cost (PBKDF2/PKCS#12-KDF rounds; scrypt
#: counts 4*N*r*p), including the pre-check's own MAC check and decryption: a 600 000-round
#: PKCS#12 costs about 3 M, eight safes of 5 M rounds would cost 40 M (several seconds)
MAX_KDF_WORK: Final = 12_000_000
#: scrypt cost bounds (N, r, p): N = 2**20 with r = 8 already needs 1 GiB of memory
MAX_SCRYPT_N: Final = 2**20
MAX_SCRYPT_R: Final = 32
MAX_SCRYPT_P: Final = 16
#: the parse worker (node.sandbox): CPU seconds per input, address space, wall-clock deadline
PARSE_CPU_SECONDS: Final = 20
PARSE_MEMORY_BYTES: Final = 2 * 1024 * 1024 * 1024
PARSE_DEADLINE_SECONDS: Final = 30.0
