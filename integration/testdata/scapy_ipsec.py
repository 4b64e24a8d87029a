#!/usr/bin/python3
"""scapy side of the Linux interop matrix (integration/scapy_test.go).

    scapy_ipsec.py REQUEST.json

The request holds one or both of these operations, each with its SA ("sa":
proto ESP or AH, SPI, scapy algorithm names, hex keys, tunnel endpoints or
none, ESN):

  "decrypt": read a capture (pcap), take the frames of that SA (outer
             src/dst, SPI, not fragmented), decrypt/verify each with scapy
             and report how many passed and what they carried.
  "build":   encrypt COUNT UDP datagrams inner_src:sport -> inner_dst:dport
             with sequence numbers from SEQ, write them as Ethernet frames
             to a pcap for the Go test to inject into ipsecstack.

It prints one JSON object: {"decrypted": n, "inner": {...}, "errors": [...],
"built": n}.
"""
import json
import sys
import warnings

warnings.filterwarnings("ignore")
# Individual modules, not scapy.all: importing everything takes seconds.
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from scapy.utils import rdpcap, wrpcap  # noqa: E402
from scapy.layers.ipsec import ESP, AH, SecurityAssociation  # noqa: E402


def make_sa(r):
    proto = ESP if r["proto"] == "ESP" else AH
    tunnel = None
    if r.get("tunnel"):
        s, d = r["tunnel"]["src"], r["tunnel"]["dst"]
        tunnel = IPv6(src=s, dst=d) if ":" in s else IP(src=s, dst=d)
    kw = dict(spi=r["spi"])
    if r.get("crypt_algo"):
        kw["crypt_algo"] = r["crypt_algo"]
        kw["crypt_key"] = bytes.fromhex(r.get("crypt_key", ""))
    if r.get("auth_algo"):
        kw["auth_algo"] = r["auth_algo"]
        kw["auth_key"] = bytes.fromhex(r.get("auth_key", ""))
    if r.get("esn"):
        kw["esn_en"] = True
        kw["esn"] = 0
    if tunnel is not None:
        kw["tunnel_header"] = tunnel
    return SecurityAssociation(proto, **kw)


def ip_layer(p):
    if IPv6 in p:
        return p[IPv6]
    if IP in p:
        return p[IP]
    return None


def outer_proto(ip):
    if isinstance(ip, IP):
        if ip.flags.MF or ip.frag:
            return None
        return ip.proto
    if IPv6ExtHdrFragment in ip:
        return None
    nh, layer = ip.nh, ip.payload
    # skip hop-by-hop / destination options ahead of AH/ESP
    while nh in (0, 60) and layer is not None:
        nh, layer = layer.nh, layer.payload
    return nh


def decrypt(req, res):
    d = req["decrypt"]
    sa = make_sa(d["sa"])
    want = 50 if d["sa"]["proto"] == "ESP" else 51
    n = 0
    for fr in rdpcap(d["pcap"]):
        ip = ip_layer(fr)
        if ip is None or ip.src != d["src"] or ip.dst != d["dst"]:
            continue
        if outer_proto(ip) != want:
            continue
        layer = ip[ESP] if want == 50 else ip[AH]
        if layer.spi != d["sa"]["spi"]:
            continue
        try:
            pkt = sa.decrypt(ip.copy())
        except Exception as e:  # ICV mismatch, padding, ...
            res["errors"].append("seq %d: %s" % (layer.seq, e))
            continue
        inner = ip_layer(pkt)
        name = "?"
        if inner is not None:
            pl = inner.payload
            while pl is not None and pl.name in ("IPv6 Extension Header - Hop-by-Hop Options Header",
                                                  "IPv6 Extension Header - Destination Options Header"):
                pl = pl.payload
            name = pl.name if pl is not None else "none"
            if d["sa"].get("tunnel"):
                name = inner.name + "/" + name
        res["inner"][name] = res["inner"].get(name, 0) + 1
        n += 1
        if n >= d.get("max", 50):
            break
    res["decrypted"] = n


def build(req, res):
    b = req["build"]
    sa = make_sa(b["sa"])
    frames = []
    for i in range(b["count"]):
        payload = ("%s-%d" % (b["prefix"], i)).encode()
        s, d = b["inner_src"], b["inner_dst"]
        ipk = IPv6(src=s, dst=d) if ":" in s else IP(src=s, dst=d)
        pkt = ipk / UDP(sport=b["sport"], dport=b["dport"]) / Raw(payload)
        pkt = ipk.__class__(bytes(pkt))  # fill in lengths and checksums
        enc = sa.encrypt(pkt, seq_num=b["seq"] + i)
        et = 0x86DD if isinstance(enc, IPv6) else 0x0800
        frames.append(Ether(src=b["eth_src"], dst=b["eth_dst"], type=et) / enc)
    wrpcap(b["out"], frames)
    res["built"] = len(frames)


def main():
    with open(sys.argv[1]) as f:
        req = json.load(f)
    res = {"decrypted": 0, "inner": {}, "errors": [], "built": 0}
    if req.get("decrypt"):
        decrypt(req, res)
    if req.get("build"):
        build(req, res)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
