package stack

import (
	"encoding/binary"
	"errors"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ipsecstack/ipsecstack/xfrm"
)

var (
	errFragment = errors.New("cannot fragment packet")
	errDF       = errors.New("packet has Don't Fragment set")
)

// fragment splits the IP packet ip into fragments of at most mtu bytes.
// It runs after IPsec, so ESP and AH are inside the fragmentable part
// (gVisor's own IPv6 fragmentation does not handle them, see
// network/ipv6/ipv6.go).
func fragment(ip []byte, mtu int, id uint32) ([]*buffer.View, error) {
	if len(ip) == 0 {
		return nil, errFragment
	}
	if ip[0]>>4 == 4 {
		return fragment4(ip, mtu, uint16(id))
	}
	return fragment6(ip, mtu, id)
}

func fragment4(ip []byte, mtu int, id uint16) ([]*buffer.View, error) {
	if len(ip) < 20 {
		return nil, errFragment
	}
	ihl := int(ip[0]&0xf) * 4
	if ihl < 20 || ihl > len(ip) {
		return nil, errFragment
	}
	if ip[6]&0x40 != 0 {
		// Never fragment a DF packet silently: the caller decides
		// (Endpoint.sendWire) and clears DF when it may.
		return nil, errDF
	}
	// Keep an existing identification; the packet may already carry one.
	if binary.BigEndian.Uint16(ip[4:]) != 0 {
		id = binary.BigEndian.Uint16(ip[4:])
	}
	origOff := int(binary.BigEndian.Uint16(ip[6:])&0x1fff) * 8
	origMF := ip[6]&0x20 != 0
	chunk := (mtu - ihl) &^ 7
	if chunk <= 0 {
		return nil, errFragment
	}
	payload := ip[ihl:]
	var out []*buffer.View
	for off := 0; off < len(payload); off += chunk {
		end := min(off+chunk, len(payload))
		v := buffer.NewViewSize(ihl + end - off)
		b := v.AsSlice()
		copy(b, ip[:ihl])
		copy(b[ihl:], payload[off:end])
		binary.BigEndian.PutUint16(b[4:], id)
		fo := uint16((origOff + off) / 8)
		if end < len(payload) || origMF {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(b[6:], fo)
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		h := header.IPv4(b)
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
		out = append(out, v)
	}
	return out, nil
}

func fragment6(ip []byte, mtu int, id uint32) ([]*buffer.View, error) {
	l, err := xfrm.ParseIPLayout(ip)
	if err != nil || l.Fragment {
		return nil, errFragment
	}
	hlen, nhOff := l.InsertOff, l.NextHdrOff
	chunk := (mtu - hlen - 8) &^ 7
	if chunk <= 0 {
		return nil, errFragment
	}
	nh := ip[nhOff]
	payload := ip[hlen:]
	var out []*buffer.View
	for off := 0; off < len(payload); off += chunk {
		end := min(off+chunk, len(payload))
		v := buffer.NewViewSize(hlen + 8 + end - off)
		b := v.AsSlice()
		copy(b, ip[:hlen])
		b[nhOff] = 44 // Fragment header
		fh := b[hlen:]
		fh[0] = nh
		fh[1] = 0
		fo := uint16(off)
		if end < len(payload) {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], id)
		copy(b[hlen+8:], payload[off:end])
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
		out = append(out, v)
	}
	return out, nil
}
