package exchange

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/ipsecstack/ipsecstack/ike/message"
)

// DeleteChild queues the Delete of CHILD SA id (RFC 7296 §1.4.1): every
// SA of it, including one replaced by a rekey and not deleted yet.
// ChildDeleted reports each once the peer answered (or the IKE SA ended).
func (s *IKESA) DeleteChild(id int) error {
	if s.closed {
		return ErrClosed
	}
	if len(s.childSAs(id)) == 0 {
		return fmt.Errorf("exchange: no CHILD SA %d", id)
	}
	s.queue = append(s.queue, &task{kind: taskDeleteChild, id: id})
	return nil
}

// childSAs returns the SAs of CHILD SA id not being deleted yet.
func (s *IKESA) childSAs(id int) []*child {
	var cs []*child
	for _, c := range s.children {
		if c.sa.ID == id && c.state != childDeleting && !c.hidden {
			cs = append(cs, c)
		}
	}
	return cs
}

// Delete queues the Delete of the IKE SA and with it of every CHILD SA
// (§1.4.1); IKEDeleted reports the end, after the peer's answer or after
// the last retransmission.
func (s *IKESA) Delete() error {
	if s.closed {
		return ErrClosed
	}
	s.queue = append(s.queue, &task{kind: taskDeleteIKE})
	return nil
}

// Liveness queues an empty INFORMATIONAL request (§1.4: a liveness
// check, strongSwan's DPD); a peer that does not answer it on the
// retransmission schedule is Dead.
func (s *IKESA) Liveness() error {
	if s.closed {
		return ErrClosed
	}
	for _, t := range s.queue {
		if t.kind == taskLiveness {
			return nil // one is enough
		}
	}
	s.queue = append(s.queue, &task{kind: taskLiveness})
	return nil
}

// queueDelete puts the Delete of c at the front of the queue: the old SA
// of a rekey goes as soon as the new one is up.
func (s *IKESA) queueDelete(c *child) {
	s.queue = append([]*task{{kind: taskDeleteChild, children: []*child{c}}}, s.queue...)
}

func (s *IKESA) startDeleteChild(t *task, now time.Time) error {
	if t.id != 0 {
		// Resolved now, not when queued: a rekey answered meanwhile made
		// another SA of the same CHILD SA.
		t.children = s.childSAs(t.id)
	}
	var live []*child
	var spis [][]byte
	for _, c := range t.children {
		if s.childByIn(c.sa.In.SPI) == c && c.state != childDeleting {
			live = append(live, c)
			spis = append(spis, binary.BigEndian.AppendUint32(nil, c.sa.In.SPI))
		}
	}
	t.children = live
	if len(live) == 0 {
		return nil // the peer deleted them meanwhile
	}
	for _, c := range live {
		c.state = childDeleting
	}
	return s.send(s.cur, message.INFORMATIONAL, []message.Payload{&message.Delete{Protocol: message.ProtoESP, SPISize: 4, SPIs: spis}}, t, now)
}

// handleInformationalRequest answers the peer's INFORMATIONAL (§1.4):
// Deletes are answered with the Deletes of the paired SAs, an empty
// request (a liveness check) with an empty response.
func (s *IKESA) handleInformationalRequest(sa *ikeSA, ps []message.Payload) []message.Payload {
	var resp []message.Payload
	var ours [][]byte
	for _, p := range ps {
		switch p := p.(type) {
		case *message.Delete:
			switch p.Protocol {
			case message.ProtoIKE:
				// The response is empty; then the IKE SA is gone (§1.4.1).
				switch {
				case sa != s.cur:
					s.dropAfter = sa // an old IKE SA after a rekey
				case s.ikeCollision != nil:
					// We answered the peer's rekey while ours was out, but
					// the peer never saw ours (or dropped it) and, its rekey
					// done, deletes the old IKE SA: its new one stands.
					theirs := s.ikeCollision
					s.ikeCollision = nil
					if p := sa.pending; p != nil && p.task.ke != nil {
						p.task.ke.Wipe()
					}
					sa.pending = nil
					s.switchIKE(sa, theirs)
					s.dropAfter = sa
				default:
					s.closeAfter = IKEDeleted{ByPeer: true}
				}
				return nil
			case message.ProtoESP:
				if p.SPISize != 4 {
					continue
				}
				for _, b := range p.SPIs {
					c := s.childByOut(binary.BigEndian.Uint32(b))
					if c == nil {
						continue // an SA we do not have is ignored (§1.4.1)
					}
					if c.state != childDeleting {
						// Crossing Deletes are not answered with one
						// (§1.4.1): our own request deletes it again.
						ours = append(ours, binary.BigEndian.AppendUint32(nil, c.sa.In.SPI))
					}
					if theirs := c.collision; theirs != nil {
						// We answered the peer's rekey of c while ours was
						// out; the peer deletes c, so it never saw ours as a
						// collision: its new SA stands and goes outbound.
						c.collision, c.state, c.replacedBy = nil, childRekeyed, theirs
					}
					s.removeChild(c)
				}
			}
		case *message.Notify:
			if p.NotifyType == message.AUTHENTICATION_FAILED {
				// §2.21.2: the peer refused our authentication after all.
				s.closeAfter = Dead{Err: ErrAuthFailed}
				return nil
			}
		}
	}
	if len(ours) > 0 {
		resp = append(resp, &message.Delete{Protocol: message.ProtoESP, SPISize: 4, SPIs: ours})
	}
	return resp
}

func (s *IKESA) handleInformationalResponse(sa *ikeSA, t *task, ps []message.Payload) {
	switch t.kind {
	case taskDeleteChild:
		for _, c := range t.children {
			s.removeChild(c)
		}
	case taskDeleteIKE:
		if sa != s.cur {
			s.dropSA(sa)
		} else {
			s.close(IKEDeleted{})
		}
	case taskLiveness:
		// The peer is alive; LastReceived moved.
	}
}
