#!/usr/bin/python3
# AH vectors from an independent implementation: scapy 2.5.0's
# SecurityAssociation (scapy.layers.ipsec) with python3-cryptography 38.0.4,
# Debian 12's packages. Run:
#   /usr/bin/python3 xfrm/ah/testdata/gen_ah_vectors.py
# and paste the output into ahVectors in vectors_test.go. Each line: name,
# algorithm (Linux name), key, ICV bits, SPI, full sequence number, ESN,
# offset of the AH header, and the packet scapy sent.
import struct
from scapy.all import raw, IP, IPv6, UDP, TCP, ICMP, Raw, IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, HBHOptUnknown, RouterAlert, PadN
from scapy.layers.inet import IPOption_RR, IPOption_Router_Alert
from scapy.layers.ipsec import SecurityAssociation, AH

payload = bytes((i * 7 + 3) & 0xff for i in range(45))
names = {"HMAC-SHA1-96": ("hmac(sha1)", 96), "SHA2-256-128": ("hmac(sha256)", 128),
         "SHA2-384-192": ("hmac(sha384)", 192), "SHA2-512-256": ("hmac(sha512)", 256),
         "HMAC-MD5-96": ("hmac(md5)", 96), "AES-CMAC-96": ("cmac(aes)", 96)}

def emit(name, algo, key, spi, seq, esn, pkt, tunnel=None):
    sa = SecurityAssociation(AH, spi=spi, seq_num=seq & 0xffffffff, auth_algo=algo, auth_key=key,
                             tunnel_header=tunnel, esn_en=esn, esn=seq >> 32)
    out = raw(sa.encrypt(pkt))
    i = 0
    while True:  # find the AH header by its SPI and sequence number
        i = out.index(struct.pack(">II", spi, seq & 0xffffffff), i + 1)
        if i >= 4:
            break
    off = i - 4
    lin, bits = names[algo]
    print('{"%s", "%s", "%s", %d, %#x, %#x, %s, %d, "%s"},' % (
        name, lin, key.hex(), bits, spi, seq, "true" if esn else "false", off, out.hex()))

k20 = bytes(range(20))
emit("ipv4 transport sha1 udp options", "HMAC-SHA1-96", k20, 0x1001, 1, False,
     IP(src="192.0.2.1", dst="192.0.2.2", tos=0x28, ttl=61, id=777, flags="DF",
        options=[IPOption_Router_Alert(), IPOption_RR(routers=["10.0.0.1"])]) / UDP(sport=1234, dport=7) / Raw(payload))
emit("ipv4 tunnel sha256 esn", "SHA2-256-128", bytes(range(32)), 0x1002, 0x1_0000_0003, True,
     IP(src="10.1.0.1", dst="10.2.0.1") / ICMP() / Raw(payload), tunnel=IP(src="192.0.2.1", dst="192.0.2.2", ttl=64))
emit("ipv4 transport cmac tcp", "AES-CMAC-96", bytes(range(16)), 0x1003, 0xffffffff, False,
     IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=5000, dport=80, flags="S") / Raw(payload))
emit("ipv6 transport sha512 hbh+dst", "SHA2-512-256", bytes(range(64)), 0x2001, 42, False,
     IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0xb8, fl=0x12345, hlim=17) /
     IPv6ExtHdrHopByHop(options=[RouterAlert(), HBHOptUnknown(otype=0x3e, optdata=b"\x11\x22\x33\x44"), PadN(optdata=b"\x00\x00")]) /
     IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1e, optdata=b"\xaa\xbb\xcc\xdd"), HBHOptUnknown(otype=0x3f, optdata=b"\x55\x66")]) /
     UDP(sport=53, dport=53) / Raw(payload))
emit("ipv6 tunnel md5 esn", "HMAC-MD5-96", bytes(range(16)), 0x2002, 0x7_0000_0001, True,
     IPv6(src="2001:db8:1::1", dst="2001:db8:2::1") / UDP(sport=9, dport=9) / Raw(payload),
     tunnel=IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=64))
emit("ipv6 transport sha384 routing", "SHA2-384-192", bytes(range(48)), 0x2003, 5, False,
     IPv6(src="2001:db8::1", dst="2001:db8::a") /
     IPv6ExtHdrRouting(type=0, segleft=2, addresses=["2001:db8::b", "2001:db8::2"]) /
     UDP(sport=1, dport=2) / Raw(payload))
