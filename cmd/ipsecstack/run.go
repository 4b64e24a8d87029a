package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipsecstack/ipsecstack/control"
	"github.com/ipsecstack/ipsecstack/ike/config"
	ikedaemon "github.com/ipsecstack/ipsecstack/ike/daemon"
	"github.com/ipsecstack/ipsecstack/link/pcap"
	"github.com/ipsecstack/ipsecstack/stack"
	"github.com/ipsecstack/ipsecstack/xfrm"
	"github.com/ipsecstack/ipsecstack/xfrm/setkey"
)

func init() { commands["run"] = runRun }

// runRun is `ipsecstack run`: the stack as a userspace host stack on an
// interface (AF_PACKET) or a TAP device, until SIGINT or SIGTERM.
func runRun(args []string) error {
	cfg, err := parseRunFlags(args, os.Stdout)
	if err != nil {
		return err
	}
	// Start-up logs are held back until the daemon is up: a failed start
	// prints its one-line reason and nothing else.
	logw := &heldWriter{w: os.Stderr}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := startDaemon(ctx, cfg, log)
	if err != nil {
		logw.release(false)
		return oneLine(err)
	}
	logw.release(true)
	<-ctx.Done()
	stop()
	log.Info("stopping", "reason", "signal")
	d.Close()
	log.Info("stopped")
	return nil
}

// oneLine keeps an error on one line of stderr.
func oneLine(err error) error {
	s := err.Error()
	if !strings.ContainsAny(s, "\r\n") {
		return err
	}
	return errors.New(strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " "))
}

// daemon is a running `ipsecstack run`: everything Close must undo, in
// reverse order of creation.
type daemon struct {
	cfg    *runConfig
	log    *slog.Logger
	engine *xfrm.Engine
	st     *stack.Stack
	ctl    *control.Server
	stats  daemonStats
	keylog *keylog           // nil without --keylog
	ike    *ikedaemon.Daemon // nil without --ike

	cancel  context.CancelFunc
	closers []func() // run in reverse order by Close
	once    sync.Once
}

func (d *daemon) onClose(fn func()) { d.closers = append(d.closers, fn) }

// Close stops everything: listeners first, then the control socket, the
// stack and its link, the capture and keylog files (flushed), and last
// the SPD and SAD, flushed so every key is zeroed.
func (d *daemon) Close() {
	d.once.Do(func() {
		d.cancel()
		for i := len(d.closers) - 1; i >= 0; i-- {
			d.closers[i]()
		}
	})
}

// startDaemon brings the stack up. On error everything already started is
// torn down again.
func startDaemon(parent context.Context, cfg *runConfig, log *slog.Logger) (_ *daemon, err error) {
	ctx, cancel := context.WithCancel(parent)
	d := &daemon{cfg: cfg, log: log, cancel: cancel}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	// 1. The engine and the setkey file: all or nothing, before the link.
	d.engine = xfrm.NewEngine()
	d.onClose(d.engine.Close)
	// Run last but for the engine's timer, when the stack, the control
	// socket and the keylog are gone: no key is left in memory after a
	// stop (deleting an SA wipes its keys once no packet holds it).
	d.onClose(func() {
		d.engine.SPD.Flush()
		d.engine.SAD.Flush(0)
	})
	if cfg.Setkey != "" {
		b, err := os.ReadFile(cfg.Setkey)
		if err != nil {
			return nil, fmt.Errorf("--setkey: %w", err)
		}
		stmts, err := setkey.Parse(cfg.Setkey, string(b))
		if err != nil {
			return nil, err
		}
		setNATKeepalives(stmts, cfg.Addrs, cfg.NATKeepalive)
		if err := setkey.ApplyTo(d.engine, stmts, discard{}, cfg.Setkey); err != nil {
			return nil, err
		}
		log.Info("setkey applied", "file", cfg.Setkey, "sas", d.engine.SAD.Len(), "policies", d.engine.SPD.Len())
	}

	var ikeCfg *config.Config
	if cfg.IKE != "" {
		if ikeCfg, err = loadIKEConfig(cfg.IKE); err != nil {
			return nil, fmt.Errorf("--ike: %w", err)
		}
	}

	// 2. Output files, created before the link so a bad path costs nothing.
	var pw *pcap.Writer
	if cfg.Pcap != "" {
		f, err := openPcapFile(cfg.Pcap)
		if err != nil {
			return nil, fmt.Errorf("--pcap: %w", err)
		}
		bw := newFlushWriter(f)
		d.onClose(func() {
			if err := bw.Close(); err != nil {
				log.Error("closing capture", "file", cfg.Pcap, "err", err)
			}
		})
		if pw, err = pcap.NewWriter(bw, 0); err != nil {
			return nil, fmt.Errorf("--pcap: %w", err)
		}
		go every(ctx, time.Second, bw.flush)
	}
	if cfg.Keylog != "" {
		kl, err := openKeylog(cfg.Keylog, d.engine, log)
		if err != nil {
			return nil, fmt.Errorf("--keylog: %w", err)
		}
		d.onClose(kl.Close)
		d.keylog = kl
		go every(ctx, 100*time.Millisecond, kl.sync) // write new SAs as they appear
	}

	// 3. The link and the stack.
	var lower gstack.LinkEndpoint
	lower, err = openEthernet(cfg.LinkKind, cfg.LinkName, cfg.MTU, cfg.UDPGSO)
	if err != nil {
		return nil, err
	}
	if ld, ok := lower.(linkDropper); ok {
		d.stats.links = append(d.stats.links, ld)
	}
	if pw != nil {
		lower = pcap.NewEndpoint(lower, pw) // under the IPsec wrapper: the wire side
	}
	sides, err := openSides(cfg, lower.MTU(), log)
	if err != nil {
		lower.Close()
		return nil, err
	}
	for _, n := range sides {
		if ld, ok := n.Link.(linkDropper); ok {
			d.stats.links = append(d.stats.links, ld)
		}
	}
	sc := stack.Config{Link: lower, Addrs: cfg.Addrs, Engine: d.engine, TxQueue: stack.DefaultTxQueue,
		LANs: sides, Forwarding: cfg.Forwarding, ClampMSS: cfg.ClampMSS}
	for _, r := range cfg.Routes {
		sc.Routes = append(sc.Routes, stack.Route{Dst: r.Dst, Gateway: r.Gateway, NIC: tcpip.NICID(r.NIC)})
	}
	d.st, err = stack.New(sc)
	if err != nil {
		lower.Close()
		for _, n := range sides {
			n.Link.Close()
		}
		return nil, err
	}
	d.onClose(d.st.Close)
	if err := applySourceHints(d.st, cfg.Routes); err != nil {
		return nil, err
	}
	log.Info("link up", "link", cfg.LinkKind+":"+cfg.LinkName, "mac", string(d.st.Endpoint.LinkAddress().String()),
		"wire_mtu", d.st.Endpoint.WireMTU(), "addrs", fmt.Sprint(cfg.Addrs))

	// 4. The control socket: PF_KEY (setkey) and JSON (stats, ping, sas).
	d.ctl, err = control.Listen(cfg.Control, d.engine)
	if err != nil {
		return nil, err
	}
	d.onClose(func() { d.ctl.Close() })
	d.stats.ctl = d.ctl
	d.stats.eng = d.st.Engine
	d.stats.st = d.st
	registerOps(d.ctl, d.st, &d.stats, log)

	// 4a. The IKE daemon (--ike): sockets on UDP 500/4500 in the stack.
	if ikeCfg != nil {
		if d.ike, err = startIKE(ctx, d, ikeCfg, log); err != nil {
			return nil, fmt.Errorf("--ike: %w", err)
		}
		d.stats.ike = d.ike
	}
	registerIKEOps(d.ctl, d.ike)

	// 5. Services inside the stack and forwards into it.
	for _, e := range cfg.Echo {
		var err error
		if e.Proto == "tcp" {
			err = d.st.ServeTCPEcho(ctx, e.Port)
		} else {
			err = d.st.ServeUDPEcho(ctx, e.Port)
		}
		if err != nil {
			return nil, fmt.Errorf("--echo %s:%d: %w", e.Proto, e.Port, err)
		}
		log.Info("echo", "proto", e.Proto, "port", e.Port)
	}
	for _, e := range cfg.Discard {
		var err error
		if e.Proto == "tcp" {
			err = d.st.ServeTCPDiscard(ctx, e.Port)
		} else {
			err = d.st.ServeUDPDiscard(ctx, e.Port)
		}
		if err != nil {
			return nil, fmt.Errorf("--discard %s:%d: %w", e.Proto, e.Port, err)
		}
		log.Info("discard", "proto", e.Proto, "port", e.Port)
	}
	for _, p := range cfg.Publish {
		closer, err := startPublish(ctx, d.st, p, cfg.ForwardLimits, &d.stats.pub, log)
		if err != nil {
			return nil, fmt.Errorf("--publish %s: %w", p, err)
		}
		d.onClose(closer)
		log.Info("publish", "proto", p.Proto, "stack_port", p.Port, "to", p.To)
	}
	for _, f := range cfg.Forward {
		closer, err := startForward(ctx, d.st, f, cfg.ForwardLimits, &d.stats.fwd, log)
		if err != nil {
			return nil, fmt.Errorf("--forward %s: %w", f, err)
		}
		d.onClose(closer)
		log.Info("forward", "proto", f.Proto, "listen", f.Listen, "to", f.To.String())
	}
	if cfg.Metrics != "" {
		ln, err := net.Listen("tcp", cfg.Metrics)
		if err != nil {
			return nil, fmt.Errorf("--metrics: %w", err)
		}
		srv := &http.Server{Handler: metricsHandler(d.st, &d.stats), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		d.onClose(func() {
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			srv.Shutdown(sctx)
		})
		log.Info("metrics", "addr", ln.Addr().String(), "path", "/metrics")
	}

	if cfg.Pprof != "" {
		ln, err := net.Listen("tcp", cfg.Pprof)
		if err != nil {
			return nil, fmt.Errorf("--pprof: %w", err)
		}
		srv := &http.Server{Handler: pprofHandler(), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		d.onClose(func() { srv.Close() })
		log.Info("pprof", "addr", ln.Addr().String(), "path", "/debug/pprof/")
	}

	// Key-manager events, logged off the packet path (never with keys).
	evs := make(chan xfrm.Event, 256)
	unsub := d.engine.Subscribe(func(ev xfrm.Event) {
		select {
		case evs <- ev:
		default:
		}
	})
	d.onClose(unsub)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-evs:
				logEvent(log, ev)
			}
		}
	}()
	log.Info("running", "control", cfg.Control)
	return d, nil
}

// heldWriter buffers writes until release, then writes through.
type heldWriter struct {
	mu       sync.Mutex
	w        *os.File
	buf      []byte
	released bool
}

func (h *heldWriter) Write(b []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return h.w.Write(b)
	}
	h.buf = append(h.buf, b...)
	return len(b), nil
}

// release writes the held lines out (flush) or drops them.
func (h *heldWriter) release(flush bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if flush {
		h.w.Write(h.buf)
	}
	h.buf, h.released = nil, true
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

func logEvent(log *slog.Logger, ev xfrm.Event) {
	switch ev.Type {
	case xfrm.EventAcquire:
		log.Info("acquire", "flow", ev.Flow.String())
	default:
		if ev.SA != nil {
			c := &ev.SA.Config
			log.Info(ev.Type.String(), "proto", c.Proto.String(), "spi", fmt.Sprintf("0x%08x", c.SPI),
				"src", c.Src.String(), "dst", c.Dst.String())
		}
	}
}

// flushWriter is a buffered file for the capture: pcap.Writer serialises
// records, flushWriter serialises them with its periodic flush.
type flushWriter struct {
	mu sync.Mutex
	f  *os.File
	bw *bufio.Writer
}

func newFlushWriter(f *os.File) *flushWriter {
	return &flushWriter{f: f, bw: bufio.NewWriterSize(f, 256<<10)}
}

func (w *flushWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.bw == nil {
		return 0, os.ErrClosed
	}
	return w.bw.Write(b)
}

// flush writes out what is buffered.
func (w *flushWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.bw != nil {
		w.bw.Flush()
	}
}

func (w *flushWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.bw == nil {
		return nil
	}
	err := w.bw.Flush()
	w.bw = nil
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// jsonReq decodes a JSON request's fields into v.
func jsonReq(req json.RawMessage, v any) error {
	if err := json.Unmarshal(req, v); err != nil {
		return fmt.Errorf("bad request: %v", err)
	}
	return nil
}

// setNATKeepalives gives the UDP-encapsulated SAs that stmts add from one
// of the stack's addresses a NAT keepalive interval, unless they have one.
// Keepalives go from the side behind the NAT (RFC 3948 §2.3); with static
// keys nothing says which side that is, so every encapsulated SA we send
// on keeps its mapping open, as an IKE daemon does when it finds a NAT.
func setNATKeepalives(stmts []setkey.Statement, addrs []netip.Prefix, every time.Duration) {
	if every <= 0 {
		return
	}
	for i := range stmts {
		c := &stmts[i].SA
		if stmts[i].Cmd != "add" || c.Encap.Type != xfrm.EncapESPInUDP || c.Encap.Keepalive != 0 {
			continue
		}
		for _, a := range addrs {
			if a.Addr() == c.Src {
				c.Encap.Keepalive = every
				break
			}
		}
	}
}
