package exchange

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Transport carries IKE messages between the two peers: UDP port 500,
// or port 4500 with the non-ESP marker (RFC 3948 §2.2) once NAT traversal
// is on. Implementations add and strip the marker.
type Transport interface {
	// Send sends one IKE message to the peer; natt selects port 4500.
	Send(msg []byte, natt bool) error
	// Recv returns the next IKE message from the peer and whether it came
	// on port 4500, or ctx's error.
	Recv(ctx context.Context) (msg []byte, natt bool, err error)
}

// Retransmit is the initiator's retransmission schedule (RFC 7296 §2.1:
// the initiator alone retransmits). The zero value takes strongSwan's
// defaults: 4 s, growing by 1.8 each time, 5 retransmissions.
type Retransmit struct {
	Timeout time.Duration
	Base    float64
	Tries   int
}

func (r Retransmit) norm() Retransmit {
	if r.Timeout <= 0 {
		r.Timeout = 4 * time.Second
	}
	if r.Base < 1 {
		r.Base = 1.8
	}
	if r.Tries <= 0 {
		r.Tries = 5
	}
	return r
}

// ErrTimeout is returned when the peer did not answer a request after
// all retransmissions.
var ErrTimeout = errors.New("exchange: peer did not answer")

// Initiate runs IKE_SA_INIT and IKE_AUTH as initiator over t, moving to
// port 4500 when a NAT is detected, and retransmitting each request (all
// its fragments) on rt's schedule until its response arrives. Datagrams
// that are dropped or are fragments of an incomplete response do not
// cause a retransmission: only the timer does.
func Initiate(ctx context.Context, cfg Config, t Transport, rt Retransmit) (*Result, error) {
	rt = rt.norm()
	i, err := NewInitiator(cfg)
	if err != nil {
		return nil, err
	}
	first, err := i.Start()
	if err != nil {
		return nil, err
	}
	req := [][]byte{first}
	for {
		next, err := roundTrip(ctx, t, i, req, rt)
		if err != nil {
			return nil, err
		}
		if next == nil {
			return i.Result(), nil
		}
		req = next
	}
}

// roundTrip sends req and feeds what arrives to i until it yields the
// next request (nil when the exchange is done), resending req on the
// schedule.
func roundTrip(ctx context.Context, t Transport, i *Initiator, req [][]byte, rt Retransmit) ([][]byte, error) {
	timeout := rt.Timeout
	natt := i.UseNATT()
	for try := 0; try <= rt.Tries; try++ {
		for _, d := range req {
			if err := t.Send(d, natt); err != nil {
				return nil, err
			}
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		for {
			msg, _, err := t.Recv(rctx)
			if err != nil {
				cancel()
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if !errors.Is(err, context.DeadlineExceeded) {
					return nil, err
				}
				break // retransmit
			}
			next, done, err := i.Handle(msg)
			switch {
			case errors.Is(err, ErrUnexpected), err == nil && !done && next == nil:
				continue // dropped, or a fragment: keep waiting
			case err != nil:
				cancel()
				return nil, err
			}
			cancel()
			return next, nil
		}
		timeout = time.Duration(float64(timeout) * rt.Base)
	}
	return nil, fmt.Errorf("%w after %d retransmissions", ErrTimeout, rt.Tries)
}

// Serve answers one initiator over t until its IKE SA and CHILD SA are
// up: each request gets its response on the port it came on. The last
// response may be lost, so the caller keeps passing what arrives next to
// r.Handle, which answers a repeated request with the same response
// (RFC 7296 §2.1), for as long as the IKE SA lives.
func Serve(ctx context.Context, r *Responder, t Transport) (*Result, error) {
	res, last, natt, err := ServeHeld(ctx, r, t)
	if err != nil {
		return nil, err
	}
	for _, d := range last {
		if err := t.Send(d, natt); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// ServeHeld is Serve without sending the last response, the IKE_AUTH
// response that brings the CHILD SA up: the caller installs the CHILD SA
// first and then sends last on the port the request came on (natt), as
// charon and Linux's key managers do. Otherwise the initiator, whose SAs
// are up as soon as that response arrives, sends before this side's
// inbound SA is there (dropped, XfrmInNoStates), and this side's own
// traffic to the initiator finds no policy yet and leaves in clear.
func ServeHeld(ctx context.Context, r *Responder, t Transport) (res *Result, last [][]byte, natt bool, err error) {
	for {
		req, natt, err := t.Recv(ctx)
		if err != nil {
			return nil, nil, false, err
		}
		resp, done, err := r.Handle(req)
		if err == nil && done {
			return r.Result(), resp, natt, nil
		}
		for _, d := range resp {
			if serr := t.Send(d, natt); serr != nil {
				return nil, nil, false, serr
			}
		}
		switch {
		case errors.Is(err, ErrUnexpected):
			continue
		case err != nil:
			return nil, nil, false, err
		}
	}
}
