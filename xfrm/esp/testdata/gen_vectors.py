#!/usr/bin/python3
# Independent ESP vectors for esp_test.go, made with pyca/cryptography
# (tested with 38.0.4), not with this package. Run:
#   /usr/bin/python3 xfrm/esp/testdata/gen_vectors.py
# and paste the output into vectorsPython in vectors_test.go.
import hmac, hashlib, struct
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

def trailer(payload, align, nh):
    pad = (align - (len(payload) + 2) % align) % align
    return payload + bytes(range(1, pad + 1)) + bytes([pad, nh])

def cbc_hmac(name, key, iv, h, icv, mkey, spi, seq, esn, payload, nh):
    hdr = struct.pack(">II", spi, seq & 0xffffffff)
    if key:
        e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        body = iv + e.update(trailer(payload, 16, nh)) + e.finalize()
    else:
        body = trailer(payload, 4, nh)
    data = hdr + body + (struct.pack(">I", seq >> 32) if esn else b"")
    return hdr + body + hmac.new(mkey, data, h).digest()[:icv]

def aead(ctor, key, salt, spi, seq, esn, payload, nh, icv=16):
    iv = struct.pack(">Q", seq)
    hdr = struct.pack(">II", spi, seq & 0xffffffff)
    aad = hdr if not esn else struct.pack(">III", spi, seq >> 32, seq & 0xffffffff)
    ct = ctor(key).encrypt(salt + iv, trailer(payload, 4, nh), aad)
    if icv < 16:
        ct = ct[:len(ct) - 16 + icv]
    return hdr + iv + ct

payload = bytes((i * 7 + 3) & 0xff for i in range(45))
out = [
    ("cbc(aes)/16+hmac(sha256)", "cbc(aes)", bytes(range(16)), "hmac(sha256)", bytes(range(32, 64)), 0, 0x01020304, 0x1_0000_0007, True,
     cbc_hmac("", bytes(range(16)), bytes(range(0xa0, 0xb0)), hashlib.sha256, 16, bytes(range(32, 64)), 0x01020304, 0x1_0000_0007, True, payload, 4), "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"),
    ("cbc(aes)/32+hmac(sha1)", "cbc(aes)", bytes(range(32)), "hmac(sha1)", bytes(range(100, 120)), 0, 0x0000abcd, 42, False,
     cbc_hmac("", bytes(range(32)), bytes(range(0x10, 0x20)), hashlib.sha1, 12, bytes(range(100, 120)), 0x0000abcd, 42, False, payload, 41), "101112131415161718191a1b1c1d1e1f"),
    ("cbc(aes)/24+hmac(sha512)", "cbc(aes)", bytes(range(24)), "hmac(sha512)", bytes(range(64)), 0, 0xdeadbeef, 0xffffffff, False,
     cbc_hmac("", bytes(range(24)), bytes(16), hashlib.sha512, 32, bytes(range(64)), 0xdeadbeef, 0xffffffff, False, payload[:13], 17), "00000000000000000000000000000000"),
    ("null+hmac(sha384)", "ecb(cipher_null)", b"", "hmac(sha384)", bytes(range(48)), 0, 0x100, 0x2_0000_0001, True,
     cbc_hmac("", b"", b"", hashlib.sha384, 24, bytes(range(48)), 0x100, 0x2_0000_0001, True, payload[:10], 6), ""),
    ("null+hmac(sha256)/96", "ecb(cipher_null)", b"", "hmac(sha256)", bytes(range(32)), 96, 0x100, 3, False,
     cbc_hmac("", b"", b"", hashlib.sha256, 12, bytes(range(32)), 0x100, 3, False, payload[:7], 6), ""),
]
for name, enc, ek, auth, ak, bits, spi, seq, esn, pkt, iv in out:
    print('{"%s", "%s", "%s", "%s", "%s", %d, %#x, %#x, %s, "%s", "%s", %d},' % (
        name, enc, ek.hex(), auth, ak.hex(), bits, spi, seq, "true" if esn else "false", iv, pkt.hex(), len(pkt)))
aeads = [
    ("rfc4106(gcm(aes))/16 esn", "rfc4106(gcm(aes))", AESGCM, bytes(range(16)), b"\x01\x02\x03\x04", 0x11223344, 0x5_0000_0009, True, 128),
    ("rfc4106(gcm(aes))/32 12", "rfc4106(gcm(aes))", AESGCM, bytes(range(32)), b"\xca\xfe\xba\xbe", 0x11223344, 77, False, 96),
    ("rfc4106(gcm(aes))/24 8", "rfc4106(gcm(aes))", AESGCM, bytes(range(24)), b"\xde\xca\xf8\x88", 0x55, 0x1_0000_0000, True, 64),
    ("rfc7539esp esn", "rfc7539esp(chacha20,poly1305)", ChaCha20Poly1305, bytes(range(32)), b"\xa0\xa1\xa2\xa3", 0x01020304, 0x7_ffff_ffff, True, 128),
]
for name, alg, ctor, key, salt, spi, seq, esn, bits in aeads:
    pkt = aead(ctor, key, salt, spi, seq, esn, payload, 4, bits // 8)
    print('{"%s", "%s", "%s", %d, %#x, %#x, %s, "%s"},' % (
        name, alg, (key + salt).hex(), bits, spi, seq, "true" if esn else "false", pkt.hex()))
