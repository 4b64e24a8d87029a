package exchange

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"sync"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

// Cookies makes and checks the stateless cookies a responder under load
// asks for before it keeps any state (RFC 7296 §2.6):
// Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>), here
// with HMAC-SHA-256 keyed by the secret, truncated to 16 bytes. The
// previous secret stays valid after Rotate, so cookies issued just before
// a rotation still work. Safe for concurrent use.
type Cookies struct {
	mu      sync.Mutex
	version uint32
	cur     [32]byte
	prev    [32]byte
}

const cookieMACLen = 16

// NewCookies returns Cookies with a fresh secret.
func NewCookies() *Cookies {
	c := &Cookies{}
	c.Rotate()
	return c
}

// Rotate replaces the secret (strongSwan rotates every 2^20 cookies;
// a timer every few minutes is as good).
func (c *Cookies) Rotate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prev = c.cur
	if _, err := rand.Read(c.cur[:]); err != nil {
		panic("exchange: no randomness for the cookie secret: " + err.Error())
	}
	c.version++
}

func cookieMAC(secret []byte, version uint32, spii uint64, ni []byte, ipi netip.Addr) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(ni)
	m.Write(ipi.Unmap().AsSlice())
	m.Write(binary.BigEndian.AppendUint64(nil, spii))
	out := binary.BigEndian.AppendUint32(nil, version)
	return append(out, m.Sum(nil)[:cookieMACLen]...)
}

// Make returns the cookie for an IKE_SA_INIT request from ipi.
func (c *Cookies) Make(spii uint64, ni []byte, ipi netip.Addr) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return cookieMAC(c.cur[:], c.version, spii, ni, ipi)
}

// Valid reports whether cookie was made by Make for these values with the
// current or the previous secret.
func (c *Cookies) Valid(cookie []byte, spii uint64, ni []byte, ipi netip.Addr) bool {
	if len(cookie) != 4+cookieMACLen {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v := binary.BigEndian.Uint32(cookie)
	var secret []byte
	switch v {
	case c.version:
		secret = c.cur[:]
	case c.version - 1:
		secret = c.prev[:]
	default:
		return false
	}
	return hmac.Equal(cookie, cookieMAC(secret, v, spii, ni, ipi))
}

// CheckCookie is the stateless gate in front of NewResponder while the
// responder is under load: for an IKE_SA_INIT request from ipi it returns
// ok when the request carries a valid cookie, and otherwise the response
// to send, a COOKIE notification (§2.6). Nothing is remembered either way.
// Malformed requests give neither (drop them).
func CheckCookie(c *Cookies, req []byte, ipi netip.Addr) (resp []byte, ok bool) {
	m, err := message.Decode(req)
	if err != nil || m.Exchange != message.IKE_SA_INIT || m.IsResponse() || m.MessageID != 0 {
		return nil, false
	}
	nonce := find[*message.Nonce](m.Payloads)
	if nonce == nil {
		return nil, false
	}
	// The cookie must be the first payload (§2.6).
	if n, isN := m.Payloads[0].(*message.Notify); isN && n.NotifyType == message.COOKIE {
		if c.Valid(n.Data, m.SPIi, nonce.Data, ipi) {
			return nil, true
		}
	}
	out := &message.Message{
		Header: message.Header{SPIi: m.SPIi, Exchange: message.IKE_SA_INIT, Flags: message.FlagResponse},
		Payloads: []message.Payload{&message.Notify{NotifyType: message.COOKIE,
			Data: c.Make(m.SPIi, nonce.Data, ipi)}},
	}
	b, err := out.Encode()
	if err != nil {
		return nil, false
	}
	return b, false
}
