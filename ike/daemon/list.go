package daemon

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/config"
	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/message"
)

// IKESAInfo describes one IKE SA for `ipsecstack ike list` (no keys).
type IKESAInfo struct {
	Conn     string `json:"conn"`
	State    string `json:"state"`
	Role     string `json:"role"`
	Local    string `json:"local"`
	Remote   string `json:"remote"`
	LocalID  string `json:"local_id"`
	RemoteID string `json:"remote_id"`
	SPIi     string `json:"spi_i"`
	SPIr     string `json:"spi_r"`
	// NATT: NAT traversal is on, the CHILD SAs are UDP-encapsulated (a
	// NAT was detected, or encap = yes). IKE may be on port 4500 without
	// it (Local and Remote show the ports).
	NATT        bool        `json:"natt"`
	LocalNAT    bool        `json:"local_nat"`
	Established string      `json:"established,omitempty"` // RFC 3339
	Children    []ChildInfo `json:"children"`
}

// ChildInfo describes one CHILD SA.
type ChildInfo struct {
	Name string `json:"name"`
	// State is INSTALLED, or REKEYED for an SA a rekey replaced that
	// stays a moment (its inbound SA for the packets still on their way,
	// or its outbound SA until the successor's is in), as swanctl shows
	// it.
	State      string   `json:"state"`
	Mode       string   `json:"mode"`
	ReqID      uint32   `json:"reqid"`
	SPIIn      string   `json:"spi_in"`
	SPIOut     string   `json:"spi_out"`
	Encap      bool     `json:"encap"`
	LocalTS    []string `json:"local_ts"`
	RemoteTS   []string `json:"remote_ts"`
	BytesIn    uint64   `json:"bytes_in"`
	BytesOut   uint64   `json:"bytes_out"`
	PacketsIn  uint64   `json:"packets_in"`
	PacketsOut uint64   `json:"packets_out"`
}

// TrapInfo is a connection's child waiting on its trap policies.
type TrapInfo struct {
	Conn  string `json:"conn"`
	Child string `json:"child"`
	ReqID uint32 `json:"reqid"`
}

// Listing is the answer of List.
type Listing struct {
	SAs   []IKESAInfo `json:"sas"`
	Traps []TrapInfo  `json:"traps"`
}

// List returns the IKE SAs, their CHILD SAs and the installed traps,
// ordered by connection name and SPI.
func (d *Daemon) List() Listing {
	d.mu.Lock()
	sas := make([]*ikeSA, 0, len(d.sas))
	for sa := range d.sas {
		sas = append(sas, sa)
	}
	d.mu.Unlock()
	var l Listing
	for _, sa := range sas {
		sa.mu.Lock()
		local, remote := sa.local, sa.remote
		if sa.on4500 {
			local, remote = netip.AddrPortFrom(sa.local.Addr(), NATTPort), sa.remoteNATT
		}
		info := IKESAInfo{Conn: sa.conn.c.Name, State: sa.state.String(), Role: role(sa.ikeInitiator),
			Local: local.String(), Remote: remote.String(), LocalID: sa.localID, RemoteID: sa.remoteID,
			SPIi: fmt.Sprintf("%016x", sa.spii), SPIr: fmt.Sprintf("%016x", sa.spir), NATT: sa.encap, LocalNAT: sa.localNAT,
			Children: []ChildInfo{}}
		if !sa.established.IsZero() {
			info.Established = sa.established.UTC().Format(time.RFC3339)
		}
		for _, c := range sa.children {
			state := "INSTALLED"
			if sa.rekeyedLocked(c) {
				state = "REKEYED"
			}
			ci := ChildInfo{Name: c.name, State: state, Mode: c.mode.String(), ReqID: c.reqid,
				SPIIn: fmt.Sprintf("%08x", c.inSPI), SPIOut: fmt.Sprintf("%08x", c.outSPI), Encap: c.encap,
				LocalTS: tsStrings(c.localTS), RemoteTS: tsStrings(c.remoteTS)}
			if c.inSA != nil {
				ci.BytesIn, ci.PacketsIn = c.inSA.Counters.Bytes.Load(), c.inSA.Counters.Packets.Load()
			}
			if c.outSA != nil {
				ci.BytesOut, ci.PacketsOut = c.outSA.Counters.Bytes.Load(), c.outSA.Counters.Packets.Load()
			}
			info.Children = append(info.Children, ci)
		}
		sa.mu.Unlock()
		l.SAs = append(l.SAs, info)
	}
	slices.SortFunc(l.SAs, func(a, b IKESAInfo) int {
		if c := strings.Compare(a.Conn, b.Conn); c != 0 {
			return c
		}
		return strings.Compare(a.SPIi, b.SPIi)
	})
	for _, cs := range d.conns {
		for i, ch := range cs.c.Children {
			if ch.StartAction == config.StartTrap {
				l.Traps = append(l.Traps, TrapInfo{Conn: cs.c.Name, Child: ch.Name, ReqID: cs.reqids[i]})
			}
		}
	}
	return l
}

// Format renders a listing as text, in the spirit of `swanctl --list-sas`.
func (l Listing) Format() string {
	var b strings.Builder
	for _, s := range l.SAs {
		fmt.Fprintf(&b, "%s: %s, %s, %s[%s]...%s[%s]\n", s.Conn, s.State, s.Role, s.Local, s.LocalID, s.Remote, s.RemoteID)
		fmt.Fprintf(&b, "  spi_i %s spi_r %s", s.SPIi, s.SPIr)
		if s.NATT {
			b.WriteString(", udp-encapsulated")
			if s.LocalNAT {
				b.WriteString(" (this side behind a NAT)")
			}
		}
		if s.Established != "" {
			fmt.Fprintf(&b, ", established %s", s.Established)
		}
		b.WriteString("\n")
		for _, c := range s.Children {
			fmt.Fprintf(&b, "  %s: %s, %s, reqid %d, ESP", c.Name, c.Mode, c.State, c.ReqID)
			if c.Encap {
				b.WriteString(" in UDP")
			}
			fmt.Fprintf(&b, " SPIs: %s_i %s_o\n", c.SPIIn, c.SPIOut)
			fmt.Fprintf(&b, "    in  %d bytes, %d packets\n    out %d bytes, %d packets\n", c.BytesIn, c.PacketsIn, c.BytesOut, c.PacketsOut)
			fmt.Fprintf(&b, "    local  %s\n    remote %s\n", strings.Join(c.LocalTS, " "), strings.Join(c.RemoteTS, " "))
		}
	}
	for _, t := range l.Traps {
		fmt.Fprintf(&b, "%s/%s: trap, reqid %d\n", t.Conn, t.Child, t.ReqID)
	}
	return b.String()
}

// Wireshark's names of the IKEv2 encryption and integrity algorithms in
// its ikev2_decryption_table (epan/dissectors/packet-isakmp.c,
// vs_ikev2_encr_algs and vs_ikev2_auth_algs).
func wiresharkIKEEncr(s *exchange.IKESuite) (string, bool) {
	switch s.Encr {
	case message.ENCR_AES_CBC:
		switch s.KeyBits {
		case 128, 192, 256:
			return fmt.Sprintf("AES-CBC-%d [RFC3602]", s.KeyBits), true
		}
	case message.ENCR_AES_GCM_16, message.ENCR_AES_GCM_12:
		icv := 16
		if s.Encr == message.ENCR_AES_GCM_12 {
			icv = 12
		}
		switch s.KeyBits {
		case 128, 192, 256:
			return fmt.Sprintf("AES-GCM-%d with %d octet ICV [RFC5282]", s.KeyBits, icv), true
		}
	}
	return "", false
}

func wiresharkIKEInteg(id uint16) (string, bool) {
	name, ok := map[uint16]string{
		message.AUTH_NONE:              "NONE [RFC4306]",
		message.AUTH_HMAC_SHA1_96:      "HMAC_SHA1_96 [RFC2404]",
		message.AUTH_HMAC_SHA2_256_128: "HMAC_SHA2_256_128 [RFC4868]",
		message.AUTH_HMAC_SHA2_384_192: "HMAC_SHA2_384_192 [RFC4868]",
		message.AUTH_HMAC_SHA2_512_256: "HMAC_SHA2_512_256 [RFC4868]",
	}[id]
	return name, ok
}

// KeyLogLine returns the Wireshark ikev2_decryption_table entry of an IKE
// SA: SPIi,SPIr,SK_ei,SK_er,"encryption",SK_ai,SK_ar,"integrity", hex
// without prefix (the AEAD keys include their salt, as Wireshark expects).
// Suites Wireshark cannot decrypt (ChaCha20-Poly1305) give an error.
func KeyLogLine(s *exchange.IKESuite, r *exchange.Result) (string, error) {
	enc, ok := wiresharkIKEEncr(s)
	if !ok {
		return "", fmt.Errorf("wireshark has no IKEv2 decryption for encryption transform %d/%d", s.Encr, s.KeyBits)
	}
	integ, ok := wiresharkIKEInteg(s.Integ)
	if !ok {
		return "", fmt.Errorf("wireshark has no IKEv2 integrity transform %d", s.Integ)
	}
	k := r.Keys
	return fmt.Sprintf("%016x,%016x,%s,%s,\"%s\",%s,%s,\"%s\"", r.SPIi, r.SPIr,
		hex.EncodeToString(k.Ei), hex.EncodeToString(k.Er), enc,
		hex.EncodeToString(k.Ai), hex.EncodeToString(k.Ar), integ), nil
}
