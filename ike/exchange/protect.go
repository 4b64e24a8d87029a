package exchange

import (
	"encoding/binary"
	"fmt"

	"github.com/ipsecstack/ipsecstack/ike/ikecrypto"
	"github.com/ipsecstack/ipsecstack/ike/message"
)

// sealMessage encodes a message whose payloads all travel inside one SK
// payload (IKE_AUTH and later exchanges, RFC 7296 §3.14).
func sealMessage(p *ikecrypto.Protector, h message.Header, inner []message.Payload) ([]byte, error) {
	pt, err := message.AppendPayloads(nil, inner)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	first := message.NoNextPayload
	if len(inner) > 0 {
		first = inner[0].Type()
	}
	n := p.SealedLen(len(pt))
	// Encode the header and an empty SK payload for the right lengths,
	// then let the Protector append the body it authenticates them with.
	outer := &message.Message{Header: h, Payloads: []message.Payload{&message.SK{Next: first}}}
	b, err := outer.AppendEncode(make([]byte, 0, message.HeaderLen+4+n))
	if err != nil {
		return nil, err
	}
	total := len(b) + n
	if total > message.MaxMessageLen {
		return nil, fmt.Errorf("exchange: message of %d bytes exceeds %d", total, message.MaxMessageLen)
	}
	binary.BigEndian.PutUint32(b[24:28], uint32(total))
	binary.BigEndian.PutUint16(b[len(b)-2:], uint16(4+n))
	return p.Seal(b, pt)
}

// openMessage decrypts the SK payload of a decoded message and decodes
// the payloads inside.
func openMessage(p *ikecrypto.Protector, raw []byte, m *message.Message) ([]message.Payload, error) {
	if len(m.Payloads) == 0 {
		return nil, fmt.Errorf("exchange: %v message without SK payload", m.Exchange)
	}
	sk, ok := m.Payloads[len(m.Payloads)-1].(*message.SK)
	if !ok {
		return nil, fmt.Errorf("exchange: %v message without SK payload", m.Exchange)
	}
	bodyAt := len(raw) - len(sk.Data)
	pt, err := p.Open(raw, bodyAt)
	if err != nil {
		return nil, fmt.Errorf("exchange: %v message %d: %w", m.Exchange, m.MessageID, err)
	}
	ps, err := message.DecodePayloads(sk.Next, pt, bodyAt)
	clear(pt)
	if err != nil {
		return nil, fmt.Errorf("exchange: %v message %d, inside SK: %w", m.Exchange, m.MessageID, err)
	}
	return ps, nil
}

func find[T message.Payload](ps []message.Payload) T {
	for _, p := range ps {
		if q, ok := p.(T); ok {
			return q
		}
	}
	var zero T
	return zero
}

func findTS(ps []message.Payload, responder bool) *message.TS {
	for _, p := range ps {
		if t, ok := p.(*message.TS); ok && t.Responder == responder {
			return t
		}
	}
	return nil
}

func findID(ps []message.Payload, responder bool) *message.ID {
	for _, p := range ps {
		if t, ok := p.(*message.ID); ok && t.Responder == responder {
			return t
		}
	}
	return nil
}

func notifies(ps []message.Payload, t message.NotifyType) []*message.Notify {
	var out []*message.Notify
	for _, p := range ps {
		if n, ok := p.(*message.Notify); ok && n.NotifyType == t {
			out = append(out, n)
		}
	}
	return out
}

// firstError returns the first error notification, which ends an
// exchange (§3.10.1).
func firstError(ps []message.Payload) *message.Notify {
	for _, p := range ps {
		if n, ok := p.(*message.Notify); ok && n.NotifyType.IsError() {
			return n
		}
	}
	return nil
}

// PeerError is a failed exchange reported by the peer with an error
// notification.
type PeerError struct {
	Exchange message.ExchangeType
	Notify   message.NotifyType
}

// Error implements error.
func (e *PeerError) Error() string {
	return fmt.Sprintf("exchange: peer answered %v with %v", e.Exchange, e.Notify)
}
