// Package exchange runs the two exchanges that create an IKEv2 SA and its
// first CHILD SA (RFC 7296 §1.2): IKE_SA_INIT and IKE_AUTH, as initiator
// and as responder.
//
// The state machines are pure: Initiator and Responder turn received
// datagrams into datagrams to send, with no sockets, timers or
// goroutines. The caller moves the bytes (UDP port 500, then 4500 with
// the non-ESP marker once NAT traversal is on, see UseNATT), retransmits,
// and installs the resulting xfrm.SAConfig pair in the SAD; nothing here
// touches the data plane. Initiate and Serve drive them over a Transport
// (send/receive of messages), with the initiator's retransmissions.
//
// Proposals: Config.IKEProposals and Config.ESPProposals list them in
// preference order (DefaultIKEProposals and DefaultESPProposals are
// strongSwan 5.9.8's defaults less what is not implemented). A responder
// picks the first of its own proposals that one of the initiator's
// matches, and within it its own first transform of each type, as
// strongSwan does; the group of the initiator's KE payload when both
// offer it, INVALID_KE_PAYLOAD naming its own otherwise. An initiator
// offers all of its proposals and retries with the group a responder asks
// for, once per group.
//
// Authentication (Config.LocalAuth, Config.RemoteAuth): a pre-shared key,
// or X.509 certificates with RSA (method 1), ECDSA (9-11) or RFC 7427
// signatures (14: PKCS#1 v1.5, RSASSA-PSS, ECDSA, Ed25519), chosen by the
// peer's SIGNATURE_HASH_ALGORITHMS; CERT payloads with the chain, CERTREQ
// with the SHA-1 key hashes of the trusted CAs, the peer's chain verified
// to one of them and its identity (of any ID type) checked against its
// certificate. Result.Peer says what the peer proved.
//
// Fragmentation (RFC 7383): announced in IKE_SA_INIT; protected messages
// larger than Config.FragmentSize go out as SKF fragments, each
// authenticated on its own, and incoming fragments are authenticated one
// by one and reassembled within MaxFragments and MaxReassembled.
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
// Not here: the server that keeps one Responder per half-open SA (and
// decides when to demand cookies; ike/daemon), one proposal per
// CREATE_CHILD_SA, fragmentation after IKE_AUTH, EAP and multiple
// authentication rounds, MOBIKE.
package exchange
