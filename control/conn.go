package control

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"syscall"

	"github.com/ipsecstack/ipsecstack/xfrm/pfkey"
)

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		uc, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		c := &conn{s: s, c: uc}
		c.cond = sync.NewCond(&c.mu)
		// The PF_KEY socket is opened before the conn is published in
		// s.conns: Close reads c.sock of every conn it finds there.
		c.sock = s.pf.OpenOutput(c)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.sock.Close()
			uc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(2)
		s.mu.Unlock()
		go c.writer()
		go c.reader()
	}
}

// conn is one client connection. Its output is a FIFO of messages bounded
// by bytes (sendQueueBytes) plus at most one running dump, which the writer
// goroutine produces one message at a time as the client reads: the
// client's pace drives the dump, and memory stays bounded whatever the
// SAD's size or the client's speed. conn implements pfkey.Output.
type conn struct {
	s    *Server
	c    *net.UnixConn
	sock *pfkey.Socket

	mu     sync.Mutex
	cond   *sync.Cond // signalled on every change below
	q      [][]byte
	qBytes int
	stream func() ([]byte, bool) // the running dump, nil if none
	// overrun is set when an asynchronous message was dropped; until the
	// client has read everything queued before the loss and then the
	// ENOBUFS notice, further asynchronous messages are dropped too, so
	// the notice marks exactly where the gap is.
	overrun  bool
	notice   []byte
	closed   bool
	closeErr sync.Once
}

// fits reports whether n more bytes may be queued: always into an empty
// queue (one message of any size passes, as a socket under its rcvbuf
// takes one skb of any size), else up to sendQueueBytes.
func (c *conn) fits(n int) bool { return c.qBytes == 0 || c.qBytes+n <= sendQueueBytes }

// Reply queues a reply to the client's own request, waiting while the
// queue is full: a client that does not read stops being served.
func (c *conn) Reply(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closed && !c.fits(len(b)) {
		c.cond.Wait()
	}
	if c.closed {
		return
	}
	c.q = append(c.q, b)
	c.qBytes += len(b)
	c.cond.Broadcast()
}

// Notify queues an asynchronous message, or drops it (counted) when the
// client is too slow.
func (c *conn) Notify(b []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return true
	}
	if c.overrun || !c.fits(len(b)) {
		if !c.overrun {
			c.overrun = true
			c.notice = enobufsNotice(b)
		}
		c.s.Dropped.Add(1)
		return false
	}
	c.q = append(c.q, b)
	c.qBytes += len(b)
	c.cond.Broadcast()
	return true
}

// enobufsNotice is what a client finds where asynchronous messages were
// lost: a bare sadb_msg (16 bytes) with the type and SA type of the first
// message lost, sadb_msg_errno ENOBUFS, and sequence and PID 0 so it is
// never taken for the answer to a request of the client's own. (Linux's
// af_key drops silently; netlink reports ENOBUFS on the next receive: this
// is the PF_KEY form of the latter.)
func enobufsNotice(lost []byte) []byte {
	n := make([]byte, 16)
	n[0] = pfkey.Version
	if len(lost) >= 4 && lost[0] == pfkey.Version {
		n[1], n[3] = lost[1], lost[3]
	}
	n[2] = byte(syscall.ENOBUFS)
	binary.NativeEndian.PutUint16(n[4:], 2) // sadb_msg_len: 16 bytes in 64-bit words
	return n
}

// Stream starts a dump unless one is running.
func (c *conn) Stream(next func() (msg []byte, last bool)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return true
	}
	if c.stream != nil {
		return false
	}
	c.stream = next
	c.cond.Broadcast()
	return true
}

// writer sends queued messages and the running dump's, alternating between
// the two so neither starves the other; each write blocks while the
// client's socket is full, which is what paces the dump.
func (c *conn) writer() {
	defer c.s.wg.Done()
	preferStream := false
	for {
		c.mu.Lock()
		for !c.closed && len(c.q) == 0 && c.stream == nil && c.notice == nil {
			c.cond.Wait()
		}
		if c.closed {
			c.mu.Unlock()
			return
		}
		var b []byte
		var next func() ([]byte, bool)
		wipe := false
		switch {
		case len(c.q) > 0 && (!preferStream || c.stream == nil):
			b = c.q[0]
			c.q[0] = nil
			c.q = c.q[1:]
			c.qBytes -= len(b)
			c.cond.Broadcast()
		case len(c.q) == 0 && c.notice != nil:
			// Everything queued before the loss has been sent: now
			// the notice, then asynchronous messages again (before
			// the rest of a running dump, which may be long).
			b, c.notice, c.overrun = c.notice, nil, false
		default:
			next = c.stream
		}
		c.mu.Unlock()
		if next != nil {
			// Produced here, on the writer, only when the previous
			// message has been taken by the socket. The dump ends
			// before its last message goes out: a client that has read
			// it may send the next DUMP at once, which must not find
			// this one still running (EBUSY).
			var last bool
			if b, last = next(); last || b == nil {
				c.mu.Lock()
				c.stream = nil
				c.cond.Broadcast()
				c.mu.Unlock()
			}
			if b == nil {
				continue
			}
			wipe = true // a dump message carries keys and is ours alone
		}
		preferStream = next == nil
		err := c.write(b)
		if wipe {
			clear(b)
		}
		if err != nil {
			c.close()
			return
		}
	}
}

// write sends one message. A message larger than the socket can carry is
// answered with EMSGSIZE (PF_KEY) or a JSON error instead of closing the
// connection.
func (c *conn) write(b []byte) error {
	_, err := c.c.Write(b)
	if errors.Is(err, syscall.EMSGSIZE) {
		c.s.Oversize.Add(1)
		if len(b) > 0 && b[0] == '{' {
			_, err = c.c.Write(jsonError("reply too large for the socket"))
		} else {
			_, err = c.c.Write(pfkey.ErrorReply(b, syscall.EMSGSIZE))
		}
	}
	return err
}

func (c *conn) close() {
	c.closeErr.Do(func() {
		c.mu.Lock()
		c.closed = true
		for i := range c.q {
			c.q[i] = nil
		}
		c.q, c.qBytes, c.stream = nil, 0, nil
		c.cond.Broadcast()
		c.mu.Unlock()
		c.sock.Close()
		c.c.Close()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
}

func (c *conn) reader() {
	defer c.s.wg.Done()
	defer c.close()
	buf := make([]byte, maxMsg)
	oob := make([]byte, 64)
	for {
		n, _, flags, _, err := c.c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		if n == 0 {
			continue
		}
		msg := append([]byte(nil), buf[:n]...)
		if flags&syscall.MSG_TRUNC != 0 || n > pfkey.MaxMsgLen {
			// Oversize: answer with EMSGSIZE and change nothing.
			if msg[0] == '{' {
				c.Reply(jsonError("request too large"))
			} else {
				c.Reply(pfkey.ErrorReply(msg, syscall.EMSGSIZE))
			}
			continue
		}
		switch msg[0] {
		case '{':
			c.Reply(c.s.handleJSON(msg))
		default:
			c.sock.Handle(msg)
		}
		clear(buf[:n]) // a request may carry keys
	}
}
