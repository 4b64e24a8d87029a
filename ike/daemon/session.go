package daemon

import (
	"time"

	"github.com/ipsecstack/ipsecstack/ike/message"
	"github.com/ipsecstack/ipsecstack/xfrm"
)

// Session drives an established IKE SA: the exchanges after IKE_AUTH
// (CREATE_CHILD_SA, INFORMATIONAL, liveness). The daemon runs one
// goroutine per IKE SA that feeds its Session every message received for
// the SA and a time tick, sends what it returns and applies its events to
// the xfrm engine. The state machine itself (rekeying both ways,
// collisions, DPD with strongSwan's timing) is ike/exchange's IKESA,
// adapted in ikesa_session.go.
type Session interface {
	// Handle processes a message received for the IKE SA.
	Handle(msg []byte, now time.Time) (out [][]byte, evs []SessionEvent, err error)
	// Tick runs the timers: retransmissions, liveness checks, rekeying.
	Tick(now time.Time) (out [][]byte, evs []SessionEvent)
	// AddChild records a CHILD SA the daemon installed (from IKE_AUTH).
	AddChild(inSPI, outSPI uint32)
	// DeleteChild starts deleting the CHILD SA whose inbound SPI is inSPI.
	DeleteChild(inSPI uint32, now time.Time) (out [][]byte, err error)
	// RekeyChild starts rekeying it (CREATE_CHILD_SA with REKEY_SA).
	RekeyChild(inSPI uint32, now time.Time) (out [][]byte, err error)
	// Delete starts deleting the IKE SA and its children.
	Delete(now time.Time) (out [][]byte, err error)
	// CreateChild starts a CREATE_CHILD_SA for another CHILD SA of the
	// configured child named name; ChildAdded reports it.
	CreateChild(name string, now time.Time) (out [][]byte, err error)
}

// EventKind says what a SessionEvent reports.
type EventKind uint8

// Session events.
const (
	// ChildAdded: a new CHILD SA (In, Out) to install.
	ChildAdded EventKind = iota + 1
	// ChildRekeyed: In, Out replace the CHILD SA OldInSPI: install the
	// new pair, switch outbound, remove the old one after. Without Out
	// (SPI 0) only the inbound SA goes in and the old outbound SA stays
	// in use until ChildOutbound.
	ChildRekeyed
	// ChildDeleted: the CHILD SA OldInSPI is gone; remove it.
	ChildDeleted
	// ChildOutbound: the outbound SA Out of the CHILD SA whose inbound
	// SPI is OldInSPI, held back by a ChildRekeyed without one. A
	// responder installs its new outbound SA only once the initiator has
	// its new inbound one (strongSwan waits for the initiator's delete of
	// the old SA), so no packet meets an SA not there yet.
	ChildOutbound
	// IKERekeyed: the IKE SA continues as SPIi/SPIr.
	IKERekeyed
	// IKEDeleted: the IKE SA was deleted by either side.
	IKEDeleted
	// Dead: the peer did not answer (DPD or a request's retransmissions).
	Dead
)

// SessionEvent is one change a Session reports.
type SessionEvent struct {
	Kind EventKind
	// Child names the configured child of a ChildAdded.
	Child string
	// In and Out are the new CHILD SA pair (ChildAdded, ChildRekeyed),
	// as exchange.Result gives them; the daemon sets the reqid,
	// lifetimes and NAT ports, and wipes the keys after installing.
	In, Out xfrm.SAConfig
	// LocalTS and RemoteTS are the new pair's traffic selectors (a
	// ChildRekeyed without them keeps the old ones).
	LocalTS, RemoteTS []message.TrafficSelector
	// OldInSPI names the CHILD SA rekeyed or deleted by our inbound SPI.
	OldInSPI uint32
	// SPIi and SPIr are the IKE SA's new SPIs (IKERekeyed); Initiator
	// says whether this side is the new IKE SA's initiator (it initiated
	// the rekey), so that its SPI is SPIi.
	SPIi, SPIr uint64
	Initiator  bool
	// KeyLog is the new IKE SA's ikev2_decryption_table line
	// (IKERekeyed), for Options.KeyLog.
	KeyLog string
	// ByPeer: the peer deleted the IKE SA (IKEDeleted); only then does
	// the child's close_action apply, as in charon (ike_delete.c
	// process_r reestablishes, its own deletes do not).
	ByPeer bool
}
