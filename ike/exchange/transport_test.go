package exchange

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

type packet struct {
	b    []byte
	natt bool
}

// pipe is an in-memory Transport end; drop, when set, decides whether to
// lose a message this end sends.
type pipe struct {
	in, out chan packet
	drop    func(n int) bool
	sent    atomic.Int32
}

func newPipes() (*pipe, *pipe) {
	a, b := make(chan packet, 16), make(chan packet, 16)
	return &pipe{in: a, out: b}, &pipe{in: b, out: a}
}

func (p *pipe) Send(b []byte, natt bool) error {
	n := int(p.sent.Add(1))
	if p.drop != nil && p.drop(n) {
		return nil
	}
	p.out <- packet{append([]byte(nil), b...), natt}
	return nil
}

func (p *pipe) Recv(ctx context.Context) ([]byte, bool, error) {
	select {
	case m := <-p.in:
		return m.b, m.natt, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// TestInitiateServe runs Initiate and Serve over an in-memory transport
// that loses the first IKE_SA_INIT request and the first IKE_AUTH
// response: the initiator's retransmissions recover, and the responder
// answers the repeated IKE_AUTH request with its stored response.
func TestInitiateServe(t *testing.T) {
	ci, cr := configs(suites[0].ike, suites[0].esp)
	a, b := newPipes()
	a.drop = func(n int) bool { return n == 1 } // first IKE_SA_INIT request
	b.drop = func(n int) bool { return n == 2 } // first IKE_AUTH response
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	type out struct {
		r   *Result
		err error
	}
	served := make(chan out, 1)
	go func() {
		r, err := NewResponder(cr)
		if err != nil {
			served <- out{nil, err}
			return
		}
		res, err := Serve(ctx, r, b)
		served <- out{res, err}
		// Keep answering retransmissions, as the IKE SA would.
		for {
			req, natt, err := b.Recv(ctx)
			if err != nil {
				return
			}
			resp, _, _ := r.Handle(req)
			for _, d := range resp {
				b.Send(d, natt)
			}
		}
	}()
	ri, err := Initiate(ctx, ci, a, Retransmit{Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := <-served
	if s.err != nil {
		t.Fatal(s.err)
	}
	if ri.Out.SPI != s.r.In.SPI || ri.In.SPI != s.r.Out.SPI {
		t.Error("CHILD SA SPIs do not match")
	}
	if a.sent.Load() != 4 || b.sent.Load() != 3 {
		t.Errorf("initiator sent %d messages, responder %d; want 4 (two requests, each twice) and 3 (the IKE_AUTH response twice)", a.sent.Load(), b.sent.Load())
	}
}

// TestInitiateTimeout: a silent peer ends the exchange with ErrTimeout
// after the configured retransmissions.
func TestInitiateTimeout(t *testing.T) {
	ci, _ := configs(suites[0].ike, suites[0].esp)
	a, _ := newPipes()
	_, err := Initiate(context.Background(), ci, a, Retransmit{Timeout: time.Millisecond, Base: 1, Tries: 3})
	if !errors.Is(err, ErrTimeout) || a.sent.Load() != 4 {
		t.Errorf("err %v after %d sends", err, a.sent.Load())
	}
}
