// Package exchange runs the two exchanges that create an IKEv2 SA and its
// first CHILD SA (RFC 7296 §1.2): IKE_SA_INIT and IKE_AUTH with a
// pre-shared key, as initiator and as responder.
//
// The state machines are pure: Initiator and Responder turn received
// messages into messages to send, with no sockets, timers or goroutines.
// The caller moves the bytes (UDP port 500, then 4500 with the non-ESP
// marker once NAT traversal is on, see UseNATT), retransmits, and
// installs the resulting xfrm.SAConfig pair in the SAD; nothing here
// touches the data plane. Initiate and Serve drive them over a Transport
// (send/receive of messages), with the initiator's retransmissions.
//
// After IKE_AUTH, NewIKESA continues the IKE SA of a Result as IKESA,
// again pure: Handle (a received message) and Tick (the clock, which the
// caller owns) return messages and events. It runs CREATE_CHILD_SA (more
// CHILD SAs, CHILD and IKE SA rekeying with PFS, the collisions of
// §2.8), INFORMATIONAL (Delete, liveness checks), the message ID window
// with cached responses, and declares the peer dead after strongSwan's
// retransmission schedule; its events (ChildAdded, ChildRekeyed, ...)
// tell a daemon which SAs to install and remove, make-before-break.
//
// One proposal is configured per side (Config.IKE, Config.ESP); a
// responder accepts any offered proposal that contains it. Not yet here:
// INVALID_KE_PAYLOAD retries as initiator, the server that keeps one
// Responder per half-open SA (and decides when to demand cookies),
// certificates and EAP, fragmentation (RFC 7383), MOBIKE.
package exchange
