// Command ipsecstack runs a gVisor netstack with IPsec: as a userspace host
// stack on an interface or TAP device (run), as a front end to a running
// one (setkey, stats, ping), or as a self-contained demonstration (demo).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
)

// commands maps a subcommand name to its entry point; each subcommand's
// file registers itself in an init function.
var commands = map[string]func(args []string) error{}

// errUsage marks an error whose message is a usage text; exit status 2.
var errUsage = errors.New("usage")

func usage() {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: ipsecstack COMMAND [flags]\n\ncommands: %v\n\nRun 'ipsecstack COMMAND -h' for a command's flags.\n", names)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "ike" && len(os.Args) > 2 && os.Args[2] == "check" {
		os.Exit(runIKECheck(os.Args[3:], os.Stdout, os.Stderr))
	}
	if name == "-h" || name == "--help" || name == "help" {
		usage()
		return
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "ipsecstack: unknown command %q\n", name)
		usage()
		os.Exit(2)
	}
	if err := cmd(os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "ipsecstack %s: %v\n", name, err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
