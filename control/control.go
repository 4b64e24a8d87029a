// Package control is ipsecstack's control socket: a Unix SOCK_SEQPACKET
// socket, one message per datagram, on which every connection is a PF_KEY
// v2 socket (messages whose first byte is 2, PF_KEY_V2) and a JSON request
// channel (messages starting with '{': {"op":"name",...}).
//
// Output to a connection is flow-controlled the way a Linux PF_KEY socket's
// receive buffer is, but bounded by bytes on our side (sendQueueBytes):
// replies to the client's own requests wait for room, so a client that
// does not read stops being served; asynchronous messages (ACQUIRE, EXPIRE,
// changes made by others) are dropped for a client that is too slow,
// counted in Server.Dropped, and the gap is marked by an ENOBUFS notice;
// DUMP and SPDDUMP are produced one message at a time as the client reads,
// so they are complete at any size. JSON answers that may be long are
// paged (Page, Client.CallPages).
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

// sendQueueBytes bounds the bytes queued for one connection beyond what
// its socket buffer holds, as sk_rcvbuf bounds a Linux PF_KEY socket
// (net.core.rmem_default is 212992). Replies wait for room; asynchronous
// messages beyond it are dropped for that connection and reported to it
// with an ENOBUFS notice.
const sendQueueBytes = 212992

// maxJSONReply is the largest JSON reply sent: a datagram larger than the
// socket's send buffer (wmem_default, 212992 bytes, less overhead) cannot
// be sent at all. Ops with long answers page them (Page).
const maxJSONReply = 192 << 10

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

	// Dropped counts asynchronous messages (ACQUIRE, EXPIRE, SA and
	// policy changes) dropped because a client did not read fast enough.
	Dropped atomic.Uint64
	// Oversize counts replies too large for the socket, answered with an
	// EMSGSIZE error instead.
	Oversize atomic.Uint64
}

// Listen creates the socket at path (mode 0600) and serves it. A stale
// socket file (nobody listening) is removed; a live one is an error.
//
// The socket is bound inside a fresh 0700 directory next to path, chmod'ed
// to 0600 and hard-linked into place (never replacing a file), so it is never reachable by others, even
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
	// link, not rename: rename would replace whatever appeared at path
	// since removeStale looked; link fails on anything there.
	if err := os.Link(tmp, path); err != nil {
		ln.Close()
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("control socket %s: created by someone else meanwhile; not replacing it", path)
		}
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

// removeStale removes what a previous daemon left at path, and nothing
// else: only a socket file that no process listens on. A socket is dead
// only when connecting to it fails with ECONNREFUSED for every socket type
// (stream, datagram, seqpacket): a live socket of another type answers
// EPROTOTYPE, one with a full backlog EAGAIN, and either may belong to
// another program, so any answer but ECONNREFUSED keeps the file and
// refuses to start.
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
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("control socket %s: exists and belongs to uid %d; not removing it", path, st.Uid)
	}
	for _, typ := range []int{syscall.SOCK_SEQPACKET, syscall.SOCK_STREAM, syscall.SOCK_DGRAM} {
		if err := probeUnix(path, typ); !errors.Is(err, syscall.ECONNREFUSED) {
			if typ == syscall.SOCK_SEQPACKET && (err == nil || errors.Is(err, syscall.EAGAIN)) {
				return fmt.Errorf("control socket %s: in use by a running ipsecstack", path)
			}
			if err == nil || errors.Is(err, syscall.EPROTOTYPE) || errors.Is(err, syscall.EAGAIN) {
				return fmt.Errorf("control socket %s: in use by another program", path)
			}
			return fmt.Errorf("control socket %s: cannot tell whether it is in use (%v); not removing it", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("control socket %s: removing stale socket: %w", path, err)
	}
	return nil
}

// probeUnix connects a non-blocking socket of type typ to path and
// returns connect's error.
func probeUnix(path string, typ int) error {
	fd, err := syscall.Socket(syscall.AF_UNIX, typ|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	return syscall.Connect(fd, &syscall.SockaddrUnix{Name: path})
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
		c.close() // also wakes a reader waiting for room for a reply
	}
	s.wg.Wait()
	s.pf.Close()
	os.Remove(s.path)
	return err
}

type jsonReply struct {
	OK     bool   `json:"ok"`
	Result any    `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
	// Next, when set, asks for the rest of a paged answer: send the
	// same request again with "after" set to it.
	Next string `json:"next,omitempty"`
}

// Page is a handler result that is one page of a longer answer: Items is
// sent as the result, Next (empty on the last page) as the reply's "next",
// which the client sends back as "after" for the following page
// (Client.CallPages). Keeping each reply under maxJSONReply is the
// handler's job; a larger one is refused.
type Page struct {
	Items any
	Next  string
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
	r := jsonReply{OK: true, Result: res}
	if p, ok := res.(Page); ok {
		r.Result, r.Next = p.Items, p.Next
	}
	b, err := json.Marshal(r)
	if err != nil {
		return jsonError("encoding reply: " + err.Error())
	}
	if len(b) > maxJSONReply {
		s.Oversize.Add(1)
		return jsonError(fmt.Sprintf("%s: reply of %d bytes exceeds the %d-byte limit", req.Op, len(b), maxJSONReply))
	}
	return b
}
