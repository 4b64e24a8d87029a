package linuxvm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

//go:embed init.sh
var initScript []byte

// Image is a prepared kernel and initramfs.
type Image struct {
	Package string // Debian package the kernel came from
	Release string // uname -r
	Kernel  string // path of vmlinuz
	Initrd  string // path of the initramfs (uncompressed newc cpio)
	// Modules lists the modules /init loads, in load order.
	Modules []string
	// Charon says that the initramfs carries strongSwan's charon and
	// swanctl (PrepareOptions.Charon; VM.StartCharon runs them).
	Charon bool
}

// PrepareOptions configures Prepare.
type PrepareOptions struct {
	// CacheDir holds downloaded and built files across runs; empty means
	// DefaultCacheDir().
	CacheDir string
	// Package pins the kernel package (e.g. "linux-image-6.1.0-57-amd64");
	// empty picks the newest linux-image-6.1.0-N-amd64 apt knows.
	Package string
	// AgentBinary is a prebuilt static agent; empty builds
	// integration/linuxvm/agent with the go tool.
	AgentBinary string
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// Charon adds the host's strongSwan charon, swanctl, the plugins of
	// CharonPlugins and the shared libraries they need to the initramfs
	// (a separate file, so images without it stay small); see
	// CheckCharon for the packages.
	Charon bool
}

// DefaultCacheDir is $XDG_CACHE_HOME/ipsecstack-vm when XDG_CACHE_HOME is
// set, /var/cache/ipsecstack-vm otherwise.
func DefaultCacheDir() string {
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "ipsecstack-vm")
	}
	return "/var/cache/ipsecstack-vm"
}

// Module sets. Names use '_' (modules.dep spelling after normalisation).
var (
	// requiredModules must exist as modules or be built in.
	requiredModules = []string{
		"virtio_pci", "virtio_net", "virtio_console",
		"xfrm_algo", "xfrm_user", "esp4", "esp6", "ah4", "ah6",
		"gcm", "ghash_generic", "authenc", "echainiv", "seqiv",
		// IV generators (seqiv, echainiv) take their seed from the
		// default "stdrng": without drbg every ESP SA with an IV fails
		// with "Kernel was unable to initialize cryptographic operations".
		"drbg", "jitterentropy_rng",
	}
	// optionalModules are loaded when the kernel has them as modules.
	optionalModules = []string{
		"net_failover", "failover",
		"af_key", "ipcomp", "ipcomp6", "xfrm_ipcomp",
		"tunnel4", "tunnel6", "xfrm4_tunnel", "xfrm6_tunnel",
		"authencesn", "ctr", "cbc", "ccm", "chacha20poly1305", "chacha_generic",
		"poly1305_generic", "des_generic", "md5", "sha1_generic", "sha256_generic",
		"sha512_generic", "xcbc", "cmac", "deflate", "aes_generic", "cryptd",
		"crypto_null", "gf128mul", "hmac", "essiv", "virtio_rng", "ansi_cprng",
	}
)

// Prepare downloads (once) Debian's kernel package, extracts the kernel and
// the modules an IPsec peer needs, and writes an initramfs with busybox,
// iproute2's ip, the modules and the agent. Everything but the initramfs is
// cached under CacheDir; the initramfs is rebuilt when its inputs change.
func Prepare(ctx context.Context, o PrepareOptions) (*Image, error) {
	logf := func(format string, a ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, "linuxvm: "+format+"\n", a...)
		}
	}
	cache := o.CacheDir
	if cache == "" {
		cache = DefaultCacheDir()
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockFile(filepath.Join(cache, "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	pkg := o.Package
	if pkg == "" {
		if pkg, err = newestKernelPackage(ctx, cache, logf); err != nil {
			return nil, err
		}
	}
	kdir := filepath.Join(cache, pkg+"-"+layoutHash())
	img := &Image{Package: pkg, Kernel: filepath.Join(kdir, "vmlinuz")}
	if _, err := os.Stat(filepath.Join(kdir, "ready")); err != nil {
		t0 := time.Now()
		if err := fetchKernel(ctx, pkg, kdir, logf); err != nil {
			return nil, fmt.Errorf("linuxvm: kernel %s: %w", pkg, err)
		}
		logf("kernel %s prepared in %v", pkg, time.Since(t0).Round(time.Millisecond))
		// Drop entries of older layouts or kernels.
		if ents, err := os.ReadDir(cache); err == nil {
			for _, e := range ents {
				if e.IsDir() && strings.HasPrefix(e.Name(), "linux-image-") && e.Name() != filepath.Base(kdir) {
					os.RemoveAll(filepath.Join(cache, e.Name()))
				}
			}
		}
	}
	rel, err := os.ReadFile(filepath.Join(kdir, "release"))
	if err != nil {
		return nil, err
	}
	img.Release = strings.TrimSpace(string(rel))
	order, err := os.ReadFile(filepath.Join(kdir, "modules.load"))
	if err != nil {
		return nil, err
	}
	img.Modules = strings.Fields(string(order))

	agent := o.AgentBinary
	if agent == "" {
		agent = filepath.Join(kdir, "agent")
		if err := buildAgent(ctx, agent); err != nil {
			return nil, err
		}
	}
	arch, err := initramfs(kdir, img, agent)
	if err != nil {
		return nil, err
	}
	initrd := "initrd.cpio"
	if o.Charon {
		if err := addCharon(arch); err != nil {
			return nil, err
		}
		img.Charon = true
		initrd = "initrd-charon.cpio"
	}
	var buf bytes.Buffer
	if err := arch.writeTo(&buf); err != nil {
		return nil, err
	}
	img.Initrd = filepath.Join(kdir, initrd)
	if old, err := os.ReadFile(img.Initrd); err != nil || !bytes.Equal(old, buf.Bytes()) {
		tmp := img.Initrd + ".tmp"
		if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, img.Initrd); err != nil {
			return nil, err
		}
		logf("initramfs %s: %d KiB", img.Initrd, buf.Len()>>10)
	}
	return img, nil
}

// layoutHash names the cache entry after what goes into it, so that a
// change of the module lists rebuilds it.
func layoutHash() string {
	h := sha256.Sum256([]byte(fmt.Sprint(layoutVersion, requiredModules, optionalModules)))
	return hex.EncodeToString(h[:4])
}

// layoutVersion changes when the cached layout does.
const layoutVersion = 1

func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

var kernelPkgRE = regexp.MustCompile(`^linux-image-6\.1\.0-(\d+)-amd64$`)

// newestKernelPackage asks apt for linux-image-6.1.0-N-amd64 packages
// (not -cloud, -rt, -dbg or the meta package) and returns the highest N. It
// runs apt-get update once when apt knows none. Offline, it falls back to
// the newest one already in the cache.
func newestKernelPackage(ctx context.Context, cache string, logf func(string, ...any)) (string, error) {
	search := func() ([]string, error) {
		out, err := exec.CommandContext(ctx, "apt-cache", "search", "--names-only", `^linux-image-6\.1\.0-[0-9]+-amd64$`).Output()
		if err != nil {
			return nil, fmt.Errorf("apt-cache search: %w", err)
		}
		var names []string
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 0 && kernelPkgRE.MatchString(f[0]) {
				names = append(names, f[0])
			}
		}
		return names, nil
	}
	names, err := search()
	if err == nil && len(names) == 0 {
		logf("apt knows no linux-image-6.1.0-*-amd64: running apt-get update")
		if out, uerr := exec.CommandContext(ctx, "apt-get", "update").CombinedOutput(); uerr != nil {
			err = fmt.Errorf("apt-get update: %v: %s", uerr, tail(out))
		} else {
			names, err = search()
		}
	}
	if len(names) == 0 {
		// Offline: reuse what the cache has.
		ents, _ := os.ReadDir(cache)
		for _, e := range ents {
			name, ok := strings.CutSuffix(e.Name(), "-"+layoutHash())
			if ok && kernelPkgRE.MatchString(name) {
				if _, serr := os.Stat(filepath.Join(cache, e.Name(), "ready")); serr == nil {
					names = append(names, name)
				}
			}
		}
	}
	if len(names) == 0 {
		if err == nil {
			err = errors.New("no linux-image-6.1.0-*-amd64 package in apt's lists")
		}
		return "", fmt.Errorf("linuxvm: %w", err)
	}
	abi := func(s string) int {
		n, _ := strconv.Atoi(kernelPkgRE.FindStringSubmatch(s)[1])
		return n
	}
	sort.Slice(names, func(i, j int) bool { return abi(names[i]) < abi(names[j]) })
	return names[len(names)-1], nil
}

// fetchKernel downloads and extracts pkg into kdir: vmlinuz, release,
// modules/ (the needed subset with depmod's files) and modules.load.
func fetchKernel(ctx context.Context, pkg, kdir string, logf func(string, ...any)) error {
	os.RemoveAll(kdir)
	work := kdir + ".work"
	os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(work)
	logf("apt-get download %s", pkg)
	cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
	cmd.Dir = work
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download: %v: %s", err, tail(out))
	}
	debs, _ := filepath.Glob(filepath.Join(work, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download left %d .deb files", len(debs))
	}
	root := filepath.Join(work, "root")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x: %v: %s", err, tail(out))
	}
	os.Remove(debs[0])
	vmlinuz, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(vmlinuz) != 1 {
		return fmt.Errorf("package has %d boot/vmlinuz-* files", len(vmlinuz))
	}
	release := strings.TrimPrefix(filepath.Base(vmlinuz[0]), "vmlinuz-")
	// Modules live in /lib/modules (bookworm) or /usr/lib/modules (later).
	modBase := root
	if _, err := os.Stat(filepath.Join(root, "lib", "modules", release)); err != nil {
		modBase = filepath.Join(root, "usr")
	}
	modDir := filepath.Join(modBase, "lib", "modules", release)
	if out, err := exec.CommandContext(ctx, "depmod", "-b", modBase, release).CombinedOutput(); err != nil {
		return fmt.Errorf("depmod -b on the package: %v: %s", err, tail(out))
	}
	deps, err := readModulesDep(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(l)] = true
		}
	}
	byName := map[string]string{}
	for p := range deps {
		byName[modName(p)] = p
	}
	var order []string
	seen := map[string]bool{}
	var visit func(p string)
	visit = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		for _, d := range deps[p] {
			visit(d)
		}
		order = append(order, p)
	}
	var missing []string
	for _, m := range requiredModules {
		if p, ok := byName[m]; ok {
			visit(p)
		} else if !builtin[m] {
			missing = append(missing, m)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("kernel has neither module nor built-in %v", missing)
	}
	for _, m := range optionalModules {
		if p, ok := byName[m]; ok {
			visit(p)
		} else if !builtin[m] {
			logf("note: kernel has no %s", m)
		}
	}
	// The subset, decompressed, with depmod's files so that busybox
	// modprobe works in the guest too.
	sub := filepath.Join(work, "sub")
	subDir := filepath.Join(sub, "lib", "modules", release)
	var load []string
	for _, p := range order {
		data, err := readModule(ctx, filepath.Join(modDir, p))
		if err != nil {
			return err
		}
		dst := stripCompression(p)
		if err := os.MkdirAll(filepath.Dir(filepath.Join(subDir, dst)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(subDir, dst), data, 0o644); err != nil {
			return err
		}
		load = append(load, dst)
	}
	for _, f := range []string{"modules.builtin", "modules.builtin.modinfo", "modules.order"} {
		if b, err := os.ReadFile(filepath.Join(modDir, f)); err == nil {
			os.WriteFile(filepath.Join(subDir, f), b, 0o644)
		}
	}
	if out, err := exec.CommandContext(ctx, "depmod", "-b", sub, release).CombinedOutput(); err != nil {
		return fmt.Errorf("depmod -b on the subset: %v: %s", err, tail(out))
	}
	if err := os.MkdirAll(work+"/out", 0o755); err != nil {
		return err
	}
	out := work + "/out"
	if err := os.Rename(vmlinuz[0], filepath.Join(out, "vmlinuz")); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(sub, "lib", "modules"), filepath.Join(out, "modules")); err != nil {
		return err
	}
	files := map[string]string{
		"release":      release + "\n",
		"modules.load": strings.Join(load, "\n") + "\n",
		"ready":        time.Now().UTC().Format(time.RFC3339) + "\n",
	}
	for _, f := range []string{"release", "modules.load", "ready"} {
		if err := os.WriteFile(filepath.Join(out, f), []byte(files[f]), 0o644); err != nil {
			return err
		}
	}
	logf("%s: %d modules", release, len(load))
	return os.Rename(out, kdir)
}

func readModulesDep(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[k] = strings.Fields(v)
	}
	return deps, sc.Err()
}

// modName turns kernel/net/ipv4/esp4.ko.xz into esp4.
func modName(p string) string {
	b := stripCompression(filepath.Base(p))
	return strings.ReplaceAll(strings.TrimSuffix(b, ".ko"), "-", "_")
}

func stripCompression(p string) string {
	for _, s := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(p, ".ko"+s) {
			return strings.TrimSuffix(p, s)
		}
	}
	return p
}

// readModule returns a module's ELF bytes, decompressing .ko.xz/.zst/.gz.
func readModule(ctx context.Context, path string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(path, ".xz"):
		tool = "xz"
	case strings.HasSuffix(path, ".zst"):
		tool = "zstd"
	case strings.HasSuffix(path, ".gz"):
		tool = "gzip"
	default:
		return os.ReadFile(path)
	}
	out, err := exec.CommandContext(ctx, tool, "-dc", path).Output()
	if err != nil {
		return nil, fmt.Errorf("%s -dc %s: %w", tool, path, err)
	}
	return out, nil
}

// sourceDir is this package's directory (the agent is built from it).
func sourceDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

func buildAgent(ctx context.Context, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = filepath.Join(sourceDir(), "agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("linuxvm: building the agent: %v: %s", err, tail(b))
	}
	return nil
}

// Paths of host files that go into the initramfs.
var (
	busyboxPaths  = []string{"/bin/busybox", "/usr/bin/busybox"}
	iproute2Paths = []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}
)

func firstExisting(paths []string) string {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// initramfs assembles the archive.
func initramfs(kdir string, img *Image, agent string) (cpioArchive, error) {
	a := cpioArchive{}
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "etc", "bin", "sbin", "usr/bin", "usr/sbin", "root", "var"} {
		a.dir(d)
	}
	a.chardev("dev/console", 5, 1)
	a.chardev("dev/null", 1, 3)
	a.file("init", 0o755, initScript)

	bb := firstExisting(busyboxPaths)
	if bb == "" {
		return nil, errors.New("linuxvm: no busybox (apt-get install busybox-static)")
	}
	if dyn, err := isDynamic(bb); err != nil || dyn {
		return nil, fmt.Errorf("linuxvm: %s is not a static busybox (apt-get install busybox-static)", bb)
	}
	if err := addHostFile(a, bb, "bin/busybox"); err != nil {
		return nil, err
	}
	a.symlink("bin/sh", "busybox")

	ipPath := firstExisting(iproute2Paths)
	if ipPath == "" {
		return nil, errors.New("linuxvm: no iproute2 ip (apt-get install iproute2)")
	}
	if err := addHostFile(a, ipPath, "usr/sbin/ip"); err != nil {
		return nil, err
	}
	libs, err := sharedLibs(ipPath)
	if err != nil {
		return nil, err
	}
	for _, l := range libs {
		if err := addHostFile(a, l, l); err != nil {
			return nil, err
		}
	}
	if b, err := os.ReadFile("/etc/protocols"); err == nil {
		a.file("etc/protocols", 0o644, b)
	} else {
		a.file("etc/protocols", 0o644, []byte(minimalProtocols))
	}
	a.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	a.file("etc/group", 0o644, []byte("root:x:0:\n"))
	a.file("etc/modules.load", 0o644, []byte(strings.Join(img.Modules, "\n")+"\n"))

	mods := filepath.Join(kdir, "modules")
	err = filepath.Walk(mods, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(mods, p)
		return addHostFile(a, p, filepath.Join("lib/modules", rel))
	})
	if err != nil {
		return nil, err
	}
	if err := addHostFile(a, agent, "bin/agent"); err != nil {
		return nil, err
	}
	return a, nil
}

func addHostFile(a cpioArchive, src, dst string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	a.file(dst, uint32(fi.Mode().Perm()), b)
	return nil
}

// sharedLibs lists the shared libraries (and the loader) bin needs, as ldd
// prints them.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("linuxvm: ldd %s: %w", bin, err)
	}
	var libs []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0]) // the loader
		}
	}
	return libs, nil
}

const minimalProtocols = `ip	0	IP
icmp	1	ICMP
igmp	2	IGMP
ipencap	4	IP-ENCAP
tcp	6	TCP
udp	17	UDP
ipv6	41	IPv6
ipv6-route	43	IPv6-Route
ipv6-frag	44	IPv6-Frag
gre	47	GRE
esp	50	IPSEC-ESP
ah	51	IPSEC-AH
ipv6-icmp	58	IPv6-ICMP
ipv6-nonxt	59	IPv6-NoNxt
ipv6-opts	60	IPv6-Opts
ipcomp	108	IPCOMP
sctp	132	SCTP
udplite	136	UDPLite
`

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return s
}
