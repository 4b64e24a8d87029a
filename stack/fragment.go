package stack

import (
	"encoding/binary"
	"errors"

	"gvisor.dev/gvisor/pkg/buffer"
)

var errFragment = errors.New("cannot fragment packet")

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
		b[10], b[11] = 0, 0
		binary.BigEndian.PutUint16(b[10:], checksum(b[:ihl]))
		out = append(out, v)
	}
	return out, nil
}

func fragment6(ip []byte, mtu int, id uint32) ([]*buffer.View, error) {
	hlen, nhOff, ok := unfragmentable6(ip)
	if !ok {
		return nil, errFragment
	}
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

// unfragmentable6 finds the end of the IPv6 unfragmentable part (RFC 8200
// §4.5) and the offset of the next-header byte that precedes it.
func unfragmentable6(p []byte) (hlen, nhOff int, ok bool) {
	if len(p) < 40 {
		return 0, 0, false
	}
	nhOff, off := 6, 40
	for {
		switch p[nhOff] {
		case 0, 43:
		case 60:
			if off+2 > len(p) || p[off] != 43 {
				return off, nhOff, true
			}
		default:
			return off, nhOff, true
		}
		if off+2 > len(p) {
			return 0, 0, false
		}
		l := (int(p[off+1]) + 1) * 8
		if off+l > len(p) {
			return 0, 0, false
		}
		nhOff, off = off, off+l
	}
}

func checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
