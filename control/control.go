// Package control is ipsecstack's control socket: a Unix SOCK_SEQPACKET
// socket, one message per datagram, on which every connection is a PF_KEY
// v2 socket (messages whose first byte is 2, PF_KEY_V2) and a JSON request
// channel (messages starting with '{': {"op":"name",...}).
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/pfkey"
)

// DefaultPath is where `ipsecstack run` listens unless --control says
// otherwise.
const DefaultPath = "/run/ipsecstack.sock"

// Version is reported by the "version" op.
var Version = "ipsecstack (devel)"

// maxMsg is the receive buffer: the largest PF_KEY message plus room to
// detect truncation.
const maxMsg = pfkey.MaxMsgLen + 8

// queueLen bounds a connection's pending output; beyond it messages are
// dropped, as a full socket receive buffer drops PF_KEY broadcasts.
const queueLen = 4096

// Server serves the control socket.
type Server struct {
	pf   *pfkey.Server
	ln   *net.UnixListener
	path string

	mu       sync.RWMutex
	handlers map[string]func(json.RawMessage) (any, error)
	conns    map[*conn]struct{}
	closed   bool
	wg       sync.WaitGroup

	// Dropped counts messages dropped because a client did not read.
	Dropped atomic.Uint64
}

// Listen creates the socket at path (mode 0600) and serves it. A stale
// socket file (nobody listening) is removed; a live one is an error.
//
// The socket is bound inside a fresh 0700 directory next to path, chmod'ed
// to 0600 and renamed into place, so it is never reachable by others, even
// briefly, without changing the process-wide umask under other goroutines.
func Listen(path string, engine *xfrm.Engine) (*Server, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".ipsecstack-sock-")
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: tmp, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	s := &Server{
		pf:       pfkey.NewServer(engine),
		ln:       ln,
		path:     path,
		handlers: make(map[string]func(json.RawMessage) (any, error)),
		conns:    make(map[*conn]struct{}),
	}
	s.HandleJSON("version", func(json.RawMessage) (any, error) {
		return map[string]string{"version": Version}, nil
	})
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("control socket %s: exists and is not a socket", path)
	}
	if c, err := net.Dial("unixpacket", path); err == nil {
		c.Close()
		return fmt.Errorf("control socket %s: in use by a running ipsecstack", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("control socket %s: removing stale socket: %w", path, err)
	}
	return nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// PFKey returns the PF_KEY server behind the socket.
func (s *Server) PFKey() *pfkey.Server { return s.pf }

// HandleJSON registers fn for JSON requests {"op": op, ...}; fn gets the
// whole request and its result is sent as {"ok":true,"result":...}, an
// error as {"ok":false,"error":"..."}.
func (s *Server) HandleJSON(op string, fn func(req json.RawMessage) (any, error)) {
	s.mu.Lock()
	s.handlers[op] = fn
	s.mu.Unlock()
}

// Close stops the server, closes every connection and removes the socket.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	for _, c := range conns {
		c.c.Close()
	}
	s.wg.Wait()
	s.pf.Close()
	os.Remove(s.path)
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		uc, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		c := &conn{s: s, c: uc, out: make(chan []byte, queueLen), done: make(chan struct{})}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			uc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		c.sock = s.pf.Open(c.enqueue)
		s.wg.Add(2)
		go c.writer()
		go c.reader()
	}
}

type conn struct {
	s    *Server
	c    *net.UnixConn
	sock *pfkey.Socket
	out  chan []byte
	done chan struct{}
	once sync.Once
}

func (c *conn) enqueue(b []byte) {
	select {
	case <-c.done:
	case c.out <- b:
	default:
		c.s.Dropped.Add(1)
	}
}

func (c *conn) writer() {
	defer c.s.wg.Done()
	for {
		select {
		case <-c.done:
			return
		case b := <-c.out:
			if _, err := c.c.Write(b); err != nil {
				c.close()
				return
			}
		}
	}
}

func (c *conn) close() {
	c.once.Do(func() {
		close(c.done)
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
				c.enqueue(jsonError("request too large"))
			} else {
				c.enqueue(pfkey.ErrorReply(msg, syscall.EMSGSIZE))
			}
			continue
		}
		switch msg[0] {
		case '{':
			c.enqueue(c.s.handleJSON(msg))
		default:
			c.sock.Handle(msg)
		}
	}
}

type jsonReply struct {
	OK     bool   `json:"ok"`
	Result any    `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

func jsonError(msg string) []byte {
	b, _ := json.Marshal(jsonReply{Error: msg})
	return b
}

func (s *Server) handleJSON(msg []byte) []byte {
	var req struct {
		Op string `json:"op"`
	}
	if err := json.Unmarshal(msg, &req); err != nil {
		return jsonError("bad request: " + err.Error())
	}
	s.mu.RLock()
	fn := s.handlers[req.Op]
	s.mu.RUnlock()
	if fn == nil {
		return jsonError(fmt.Sprintf("unknown op %q", req.Op))
	}
	res, err := fn(json.RawMessage(msg))
	if err != nil {
		return jsonError(err.Error())
	}
	b, err := json.Marshal(jsonReply{OK: true, Result: res})
	if err != nil {
		return jsonError("encoding reply: " + err.Error())
	}
	return b
}
