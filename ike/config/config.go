// Package config is an IKE key manager's configuration as ipsecstack uses
// it: the connections, children, secrets and authorities that a
// strongSwan user writes in swanctl.conf (ike/swanctl parses that syntax
// into these types). It has no behaviour beyond checking itself; the
// daemon (ike/daemon) turns a Connection into exchanges and the CHILD SAs
// into xfrm SAs and policies.
//
// Times are durations with swanctl's defaults already applied by the
// parser; a zero duration means "off" where swanctl allows that.
package config

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"net/netip"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/exchange"
	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// Pos is where a setting was written, for errors that say file:line.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Config is a whole configuration: every connection and the secrets and
// CA certificates they may use.
type Config struct {
	Connections []*Connection
	Secrets     []*Secret
	// Authorities are trusted CA certificates (connections' cacerts and the
	// authorities section); a peer's chain must end in one of them.
	Authorities []*x509.Certificate
}

// Connection is one swanctl.conf connections.<name> section: an IKE SA's
// parameters and the CHILD SAs negotiated under it.
type Connection struct {
	Name string
	Pos  Pos
	// LocalAddrs and RemoteAddrs restrict the IKE endpoints; empty is %any.
	// A single address is a /32 or /128 prefix. The first RemoteAddrs entry
	// that is one address is where an initiator sends.
	LocalAddrs, RemoteAddrs []netip.Prefix
	// LocalPort and RemotePort are the IKE ports (500 by default; the
	// exchange floats to 4500 by itself).
	LocalPort, RemotePort uint16
	// Proposals are the IKE proposals in preference order, as on the wire
	// (Protocol PROTO_IKE; transforms of each type are alternatives).
	Proposals []message.Proposal
	// Encap forces UDP encapsulation of ESP even without a NAT (swanctl
	// encap = yes).
	Encap bool
	// Fragmentation is swanctl's fragmentation setting.
	Fragmentation Fragmentation
	// DPDDelay is how long the peer may be silent before a liveness check
	// (0: only when there is outbound traffic to send, i.e. off).
	DPDDelay time.Duration
	// RekeyTime is when the IKE SA is rekeyed (swanctl default 4h; 0 off).
	RekeyTime time.Duration
	// OverTime is how long past its (jittered) RekeyTime the IKE SA may
	// live, its rekeys failing, before it is deleted: its hard lifetime
	// (default 10% of RekeyTime; unused when RekeyTime is 0).
	OverTime time.Duration
	// RandTime is the upper bound of the random jitter subtracted from
	// RekeyTime (default min(OverTime, RekeyTime/2)); 0 is no jitter.
	RandTime time.Duration
	// KeyingTries is how many times keying is attempted (default 1; 0
	// means forever).
	KeyingTries int
	// Unique is the uniqueness policy for IKE SAs of the same identities.
	Unique Unique
	// SendCertReq says whether CERTREQ payloads are sent (default yes).
	SendCertReq bool
	// SendCert says when our certificate is sent.
	SendCert SendCert
	// Local and Remote are the authentication rounds (local, local-2, …);
	// ipsecstack supports exactly one round on each side.
	Local, Remote []*Auth
	// Children are the CHILD SAs, in file order.
	Children []*Child
}

// Fragmentation is swanctl's fragmentation setting (RFC 7383).
type Fragmentation uint8

// Fragmentation settings.
const (
	FragmentationYes    Fragmentation = iota // offer and use when the peer supports it (default)
	FragmentationAccept                      // accept but do not offer
	FragmentationForce                       // fragment even IKE_SA_INIT-sized messages
	FragmentationNo                          // never
)

// Unique is swanctl's unique setting.
type Unique uint8

// Uniqueness policies.
const (
	UniqueNo      Unique = iota // default
	UniqueNever                 // never close duplicates, even on INITIAL_CONTACT
	UniqueKeep                  // keep the old IKE SA, reject the new
	UniqueReplace               // replace the old IKE SA
)

// SendCert is swanctl's send_cert setting.
type SendCert uint8

// When our certificate is sent.
const (
	SendCertIfAsked SendCert = iota // default: when a CERTREQ came
	SendCertAlways
	SendCertNever
)

// AuthMethod is how one side authenticates (swanctl's auth = …).
type AuthMethod uint8

// Authentication methods.
const (
	// AuthPSK is a shared key (auth = psk).
	AuthPSK AuthMethod = iota + 1
	// AuthPubkey is a signature with the key of Certs[0] (auth = pubkey,
	// rsa, ecdsa, ed25519, with or without a signature scheme suffix);
	// Schemes narrows the RFC 7427 signature schemes when given.
	AuthPubkey
)

// Auth is one authentication round of one side.
type Auth struct {
	Pos    Pos
	Method AuthMethod
	// ID is the identity sent (local) or required (remote). A zero Data
	// means "any" for remote (%any) and, for local, the certificate's
	// subject DN or the IKE address, as swanctl does.
	ID Identity
	// Certs are the local end entity certificate and intermediates (local)
	// or certificates the peer's must be (remote: pinned end entities);
	// Certs[0] is the end entity.
	Certs []*x509.Certificate
	// CACerts are the CAs that a remote's chain must end in (remote
	// cacerts); empty means any of Config.Authorities.
	CACerts []*x509.Certificate
	// Key is the local private key for Certs[0] (from the secrets or
	// swanctl/private, x509 directories); nil for remote rounds.
	Key crypto.Signer
	// KeyType narrows the signature key type (auth = rsa, ecdsa, ed25519,
	// rsa/pss ...); KeyAny for auth = pubkey.
	KeyType KeyType
	// Schemes are the RFC 7427 hash algorithms allowed (IANA "IKEv2 Hash
	// Algorithms": 1 SHA1, 2 SHA2-256, 3 SHA2-384, 4 SHA2-512, 5
	// Identity for Ed25519), in preference order; empty means the daemon's
	// defaults. swanctl applies them to the IKE AUTH signature and to the
	// signatures of the peer's certificate chain.
	Schemes []uint16
}

// KeyType is a signature key type constraint.
type KeyType uint8

// Key types.
const (
	KeyAny     KeyType = iota // any key the certificate has
	KeyRSA                    // RSA, PKCS#1 v1.5 signatures (or PSS when the peer uses it)
	KeyRSAPSS                 // RSA with RSASSA-PSS signatures only (auth = rsa/pss)
	KeyECDSA                  // ECDSA
	KeyEd25519                // Ed25519
)

// DynamicTS is swanctl's "dynamic" traffic selector: the IKE SA's address
// on that side (the virtual IP is not supported), with an optional protocol
// and port range. It is a TrafficSelector with TSType 0 and no addresses;
// the daemon replaces it by the IKE endpoint's /32 or /128 before it goes
// on the wire.
func DynamicTS(proto uint8, startPort, endPort uint16) message.TrafficSelector {
	return message.TrafficSelector{IPProto: proto, StartPort: startPort, EndPort: endPort}
}

// IsDynamic reports whether ts is a DynamicTS.
func IsDynamic(ts message.TrafficSelector) bool {
	return ts.TSType == 0 && !ts.Start.IsValid() && !ts.End.IsValid() && ts.Data == nil
}

// Identity is an IKE identity (RFC 7296 §3.5): the exchange's type, so a
// configured identity goes to the exchange as it is.
type Identity = exchange.Identity

// StartAction is what happens to a CHILD SA when the configuration loads.
type StartAction uint8

// Start actions (swanctl start_action).
const (
	StartNone  StartAction = iota // wait for the peer or `ipsecstack ike initiate`
	StartTrap                     // install policies; negotiate on the first packet (ACQUIRE)
	StartStart                    // initiate at once
)

// Action is what follows a CHILD SA's loss (dpd_action, close_action).
type Action uint8

// Actions.
const (
	ActionClear   Action = iota // remove it (default)
	ActionTrap                  // put the trap policies back
	ActionRestart               // negotiate again at once
)

// Child is one children.<name> section: a CHILD SA's traffic selectors,
// mode, proposals and lifetimes.
type Child struct {
	Name string
	Pos  Pos
	// LocalTS and RemoteTS are the traffic selectors (swanctl's local_ts
	// and remote_ts; default: the IKE addresses, "dynamic").
	LocalTS, RemoteTS []message.TrafficSelector
	// Mode is tunnel (default) or transport.
	Mode xfrm.Mode
	// Proposals are the ESP proposals (Protocol PROTO_ESP); a KE transform
	// in them asks for PFS in CREATE_CHILD_SA.
	Proposals []message.Proposal
	// StartAction, DPDAction and CloseAction are swanctl's actions.
	StartAction     StartAction
	DPDAction       Action
	CloseAction     Action
	RekeyTime       time.Duration // default 1h; 0 off
	LifeTime        time.Duration // default RekeyTime * 1.1
	RandTime        time.Duration // default LifeTime - RekeyTime; 0 no jitter
	RekeyBytes      uint64        // 0 off
	LifeBytes       uint64        // default RekeyBytes * 1.1
	RandBytes       uint64        // default LifeBytes - RekeyBytes; 0 no jitter
	RekeyPackets    uint64        // 0 off
	LifePackets     uint64        // default RekeyPackets * 1.1
	RandPackets     uint64        // default LifePackets - RekeyPackets; 0 no jitter
	ReplayWindow    uint32        // default 32
	ReqID           uint32        // 0: assigned
	HWOffload, Copy bool          // rejected by the parser when set to anything but defaults
}

// Secret is one secrets.<type><suffix> section.
type Secret struct {
	Pos Pos
	// Type is "ike" (a PSK), "private", "rsa", "ecdsa" or "pkcs8".
	Type string
	// IDs are the identities the secret belongs to; empty means any.
	IDs []Identity
	// Data is the PSK (for ike); Key the private key (for the others).
	Data []byte
	Key  crypto.Signer
}
