// Command linuxvm prepares and boots the integration VM by hand.
//
//	go run ./integration/linuxvm/cmd/linuxvm prepare
//	go run ./integration/linuxvm/cmd/linuxvm [-tap ipsvm0] [-console] [-charon] shell
//
// shell boots the guest and runs each line read from standard input in it
// (iproute2's ip is `ip` there), printing its output and exit status.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/ipsecstack/ipsecstack/integration/linuxvm"
)

func main() {
	tap := flag.String("tap", "ipsvm0", "host TAP device")
	cache := flag.String("cache", "", "cache directory (default "+linuxvm.DefaultCacheDir()+")")
	console := flag.Bool("console", false, "print the guest console")
	charon := flag.Bool("charon", false, "put strongSwan's charon and swanctl into the guest (linuxvm.PrepareOptions.Charon)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var log io.Writer
	if *console {
		log = os.Stderr
	}
	switch flag.Arg(0) {
	case "prepare":
		img, err := linuxvm.Prepare(ctx, linuxvm.PrepareOptions{CacheDir: *cache, Log: os.Stderr, Charon: *charon})
		if err != nil {
			fatal(err)
		}
		fmt.Printf("package %s\nrelease %s\nkernel  %s\ninitrd  %s\nmodules %d\n", img.Package, img.Release, img.Kernel, img.Initrd, len(img.Modules))
	case "shell":
		img, err := linuxvm.Prepare(ctx, linuxvm.PrepareOptions{CacheDir: *cache, Log: log, Charon: *charon})
		if err != nil {
			fatal(err)
		}
		vm, err := linuxvm.Start(ctx, linuxvm.Options{TapName: *tap, Image: img, Log: log})
		if err != nil {
			fatal(err)
		}
		defer vm.Close()
		fmt.Fprintf(os.Stderr, "booted %s in %v; one command per line\n", vm.Image.Release, vm.BootTime.Round(time.Millisecond))
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			r, err := vm.Exec(ctx, sc.Text())
			if err != nil {
				fmt.Fprintln(os.Stderr, "error:", err)
				if ctx.Err() != nil {
					return
				}
				continue
			}
			fmt.Print(r.Stdout)
			fmt.Fprint(os.Stderr, r.Stderr)
			if r.Exit != 0 {
				fmt.Fprintf(os.Stderr, "[exit %d]\n", r.Exit)
			}
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: linuxvm [-tap NAME] [-cache DIR] [-console] [-charon] prepare|shell")
		os.Exit(2)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
