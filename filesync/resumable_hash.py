"""SHA-256 whose running state can be saved and restored.

An export is written over several worker ticks (and may resume after a crash), yet its
`end` event must carry the sha256 of the whole archive. hashlib objects cannot be
serialised, so this drives OpenSSL's SHA256_* functions through ctypes: their context is
a plain public struct (`SHA256_CTX`, openssl/sha.h), which is saved as bytes in the
checkpoint beside the count of bytes it has seen.
"""

import ctypes
import ctypes.util

_CTX_SIZE = 112  # sizeof(SHA256_CTX): h[8], Nl, Nh, data[16], num, md_len (32-bit each)
_libcrypto = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
for _name in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
    getattr(_libcrypto, _name).restype = ctypes.c_int
_libcrypto.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]


class ResumableSha256:
    def __init__(self, state: bytes | None = None):
        if state is None:
            self._ctx = ctypes.create_string_buffer(_CTX_SIZE)
            _libcrypto.SHA256_Init(self._ctx)
        else:
            if len(state) != _CTX_SIZE:
                raise ValueError("not a saved SHA-256 state")
            self._ctx = ctypes.create_string_buffer(bytes(state), _CTX_SIZE)

    def update(self, data: bytes) -> None:
        data = data if isinstance(data, bytes) else bytes(data)
        _libcrypto.SHA256_Update(self._ctx, data, len(data))

    def state(self) -> bytes:
        return self._ctx.raw

    def hexdigest(self) -> str:
        ctx = ctypes.create_string_buffer(self._ctx.raw, _CTX_SIZE)
        out = ctypes.create_string_buffer(32)
        _libcrypto.SHA256_Final(out, ctx)
        return out.raw.hex()
