// Command bench is ipsecstack's benchmark harness. Times on shared
// machines are noisy, so every figure is measured side by side with its
// baseline in the same run, interleaved, and reported as a ratio:
//
//	go run ./bench                       # all suites, Markdown table
//	go run ./bench --quick               # under 2 minutes on 2 cores
//	go run ./bench --json FILE --svg DIR # every result as JSON, plots as SVG
//	go run ./bench --suites tcp,spd      # a subset
//	go run ./bench --wire                # real links between namespaces (root)
//
// Suites:
//
//   - transforms: every algorithm of esp.Algorithms() (AEADs, every
//     cipher with HMAC-SHA256, every integrity algorithm with AES-CBC),
//     ESP seal and open at 64, 512, 1400 and 8192 bytes against the raw
//     primitive (cipher.AEAD, or the cipher plus the MAC) on the same
//     buffers; allocations per packet.
//   - tcp: TCP bulk throughput between two stacks over link/memlink: ESP
//     (AES-GCM-128/256, ChaCha20-Poly1305, AES-CBC+HMAC-SHA256) and AH
//     HMAC-SHA256, transport and tunnel, against plain gVisor (the same
//     pair with no policy) and against wireguard-go (its device and
//     tun/netstack joined by conn/bindtest), rounds interleaved.
//   - udp: 64-byte UDP echo packets per second, ESP against plain.
//   - spd: SPD lookup (flow-cache hit and miss) with 10 to 1M policies,
//     insertion per policy; SAD SPI lookup and memory per SA with 1M SAs.
//   - replay: anti-replay check and update for windows of 64 to 2^20.
//   - cores: two TCP flows on two SAs (two delivery goroutines) against
//     one flow.
//
// --wire is the real-link benchmark: every contender in its own pair of
// network namespaces joined by a veth, one-way TCP bulk (--wire-bytes,
// 256 MiB by default) from a program in A to a sink in B and 64-byte UDP
// request/response, --wire-rounds interleaved rounds (median, min-max),
// CPU seconds per GB of all the contender's processes plus the softirq
// time, retransmits and drops. Contenders (--wire-only picks by id): the
// kernel on the plain veth; `ipsecstack run` daemons (built once) with no
// SA, ESP AES-GCM-128 transport and tunnel and ChaCha20-Poly1305, over
// AF_PACKET and over a TAP bridged to the veth, the host program going
// through daemon A's --forward to daemon B's --discard/--echo, or to a
// host sink through daemon B's --publish; wireguard-go (built from
// go.mod's module, TUN devices, configured with wg) and strongSwan's
// charon with kernel-libipsec (AES-GCM-128, UDP-encapsulated tunnel), both
// carrying kernel TCP. The traffic programs are this binary run again as
// `bench wire-helper`. Everything is removed at the end, on error and on
// SIGINT/SIGTERM; a run killed outright leaves namespaces named wb<pid>-N,
// which the next run removes. WIRE_DEBUG=1 keeps the daemons' captures.
//
// Every result has a value, a baseline measured in the same run and a
// ratio that is a relative speed: above 1 means faster than the baseline
// (rate/rate, or baseline time/time).
//
// The go test benchmarks in this directory (BenchmarkTransform,
// BenchmarkTCP) remain for quick looks with the go tool.
package main
