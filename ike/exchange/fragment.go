package exchange

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
)

// Limits of the RFC 7383 reassembly: they bound the memory one peer's
// fragments can hold before they are authenticated as a whole.
const (
	// MaxFragments is the largest Total Fragments accepted.
	MaxFragments = 64
	// MaxReassembled is the largest reassembled plaintext, strongSwan's
	// charon.max_packet default.
	MaxReassembled = 10000
)

// minFragmentSize is the smallest FragmentSize allowed: IPv4's minimum
// reassembly size (RFC 791), which RFC 7383 §2.5.1 names as the floor.
const minFragmentSize = 576

// skfOverhead is the IKE header and the SKF payload header with its
// Fragment Number and Total Fragments fields.
const skfOverhead = message.HeaderLen + 8

// fragmentPayload returns how many plaintext bytes fit in one fragment
// of at most maxMsg bytes (the IKE message, after IP and UDP headers).
func fragmentPayload(p *ikecrypto.Protector, maxMsg int) int {
	n := maxMsg - skfOverhead
	for n > 0 && skfOverhead+p.SealedLen(n) > maxMsg {
		n--
	}
	return n
}

// maxIKEMessage is the largest IKE message that fits in an IP datagram
// of fragSize bytes (strongSwan's fragment_size is the whole datagram):
// the IP header (20 or 40 bytes), UDP (8) and, on port 4500, the non-ESP
// marker (4) come off.
func maxIKEMessage(fragSize int, ipv6, natt bool) int {
	n := fragSize - 8
	if ipv6 {
		n -= 40
	} else {
		n -= 20
	}
	if natt {
		n -= 4
	}
	return n
}

// sealFragments encodes a protected message as RFC 7383 fragments when
// it would exceed maxMsg bytes, or as one SK message otherwise. Each
// fragment is an SKF payload sealed on its own: the IKE header (Next
// Payload SKF, its own Length) and the SKF header with Fragment Number
// and Total Fragments are authenticated with it (§2.5). maxMsg of 0
// never fragments.
func sealFragments(p *ikecrypto.Protector, h message.Header, inner []message.Payload, maxMsg int) ([][]byte, error) {
	pt, err := message.AppendPayloads(nil, inner)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	if maxMsg == 0 || message.HeaderLen+4+p.SealedLen(len(pt)) <= maxMsg {
		b, err := sealMessage(p, h, inner)
		if err != nil {
			return nil, err
		}
		return [][]byte{b}, nil
	}
	per := fragmentPayload(p, maxMsg)
	if per < 1 {
		return nil, fmt.Errorf("exchange: fragments of %d bytes leave no room for data", maxMsg)
	}
	total := (len(pt) + per - 1) / per
	if total > MaxFragments {
		return nil, fmt.Errorf("exchange: message of %d bytes needs %d fragments, more than %d", len(pt), total, MaxFragments)
	}
	first := inner[0].Type()
	out := make([][]byte, 0, total)
	for k := 0; k < total; k++ {
		chunk := pt[k*per : min((k+1)*per, len(pt))]
		next := message.NoNextPayload
		if k == 0 {
			next = first // §2.5: the first inner payload's type, in fragment 1 only
		}
		n := p.SealedLen(len(chunk))
		m := &message.Message{Header: h, Payloads: []message.Payload{&message.SKF{Next: next, Number: uint16(k + 1), Total: uint16(total)}}}
		b, err := m.AppendEncode(make([]byte, 0, skfOverhead+n))
		if err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint32(b[24:28], uint32(len(b)+n))
		binary.BigEndian.PutUint16(b[len(b)-6:], uint16(8+n))
		if b, err = p.Seal(b, chunk); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// errIncomplete is returned by reassembler.add while fragments are
// missing; the caller waits for more.
var errIncomplete = errors.New("exchange: waiting for more fragments")

// reassembler collects the fragments of one message (RFC 7383 §2.6):
// each is authenticated and decrypted before it is kept, so a forged
// fragment costs nothing, and the held plaintext is bounded by
// MaxFragments and MaxReassembled. It holds one message ID at a time:
// IKE has one request and one response in flight per direction.
type reassembler struct {
	mid   uint32
	total uint16
	first message.PayloadType
	parts [][]byte // decrypted fragments by number-1; nil: missing
	have  int
	size  int
}

// reset drops what was collected; the caller does so when a message
// completes, when the exchange moves on, or when its reassembly timer
// (the caller's) expires.
func (r *reassembler) reset() {
	for _, p := range r.parts {
		clear(p)
	}
	*r = reassembler{}
}

// pending reports whether fragments of an incomplete message are held.
func (r *reassembler) pending() bool { return r.have > 0 }

// add takes one fragment of message m (raw as received, skf its last
// payload). It returns the payloads of the whole message once all
// fragments are in, errIncomplete while some are missing, or an error
// wrapping ErrUnexpected for a fragment that is dropped.
func (r *reassembler) add(p *ikecrypto.Protector, raw []byte, m *message.Message, skf *message.SKF) ([]message.Payload, error) {
	if len(m.Payloads) != 1 {
		// §2.5: an SKF payload is alone (or follows unencrypted payloads
		// that IKE_AUTH and later exchanges do not have).
		return nil, fmt.Errorf("exchange: %w: fragment with %d payloads", ErrUnexpected, len(m.Payloads))
	}
	if skf.Total > MaxFragments {
		return nil, fmt.Errorf("exchange: %w: fragment %d of %d, more than %d", ErrUnexpected, skf.Number, skf.Total, MaxFragments)
	}
	if r.have > 0 && m.MessageID != r.mid {
		// A fragment of another message ID: the caller checked the ID is
		// the one expected now, so the held fragments are stale.
		r.reset()
	}
	if r.have > 0 && skf.Total != r.total {
		// §2.6.1: a fragment with a larger Total Fragments starts a new
		// set (the sender re-fragmented with a smaller size); a smaller one
		// is stale and dropped. Both must be authentic first.
		if skf.Total < r.total {
			return nil, fmt.Errorf("exchange: %w: fragment of %d after fragments of %d", ErrUnexpected, skf.Total, r.total)
		}
	}
	if r.have > 0 && skf.Total == r.total && r.parts[skf.Number-1] != nil {
		return nil, errIncomplete // a duplicate (retransmission)
	}
	pt, err := p.Open(raw, len(raw)-len(skf.Data))
	if err != nil {
		return nil, fmt.Errorf("exchange: %w: fragment %d of %d of %v message %d: %w", ErrUnexpected, skf.Number, skf.Total, m.Exchange, m.MessageID, err)
	}
	if r.have > 0 && skf.Total > r.total {
		r.reset()
	}
	if r.have == 0 {
		r.mid, r.total, r.parts = m.MessageID, skf.Total, make([][]byte, skf.Total)
	}
	if r.size+len(pt) > MaxReassembled {
		clear(pt)
		r.reset()
		return nil, fmt.Errorf("exchange: %w: fragments exceed %d bytes", ErrUnexpected, MaxReassembled)
	}
	if skf.Number == 1 {
		r.first = skf.Next
	}
	r.parts[skf.Number-1] = pt
	r.have++
	r.size += len(pt)
	if r.have < int(r.total) {
		return nil, errIncomplete
	}
	whole := make([]byte, 0, r.size)
	for _, part := range r.parts {
		whole = append(whole, part...)
	}
	first := r.first
	r.reset()
	defer clear(whole)
	ps, err := message.DecodePayloads(first, whole, 0)
	if err != nil {
		return nil, fmt.Errorf("exchange: %v message %d, reassembled from %d fragments: %w", m.Exchange, m.MessageID, skf.Total, err)
	}
	return ps, nil
}

// openAny opens a protected message that came whole (SK) or as one
// fragment (SKF, when fragmentation was negotiated).
func openAny(p *ikecrypto.Protector, ra *reassembler, fragOK bool, raw []byte, m *message.Message) ([]message.Payload, error) {
	if len(m.Payloads) > 0 {
		if skf, ok := m.Payloads[len(m.Payloads)-1].(*message.SKF); ok {
			if !fragOK {
				return nil, fmt.Errorf("exchange: %w: fragment without negotiated fragmentation", ErrUnexpected)
			}
			return ra.add(p, raw, m, skf)
		}
	}
	ps, err := openMessage(p, raw, m)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnexpected, err)
	}
	return ps, nil
}
