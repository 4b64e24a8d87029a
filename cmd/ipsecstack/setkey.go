package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ipsecstack/ipsecstack/control"
	"github.com/ipsecstack/ipsecstack/xfrm/setkey"
)

func init() { commands["setkey"] = runSetkey }

// runSetkey is `ipsecstack setkey [--control PATH] [-f FILE | -c | -D |
// -DP | -F | -FP]`: like KAME setkey, it speaks PF_KEY to a running
// `ipsecstack run` over its control socket. A file (or standard input with
// -c) is parsed and checked locally, then sent as one transaction that is
// rolled back if any request fails.
func runSetkey(args []string) error {
	fs := flag.NewFlagSet("setkey", flag.ContinueOnError)
	path := fs.String("control", control.DefaultPath, "control socket `PATH`")
	file := fs.String("f", "", "apply setkey statements from `FILE`")
	stdin := fs.Bool("c", false, "read statements from standard input")
	dump := fs.Bool("D", false, "dump the SAD")
	dumpP := fs.Bool("DP", false, "dump the SPD")
	flush := fs.Bool("F", false, "flush the SAD")
	flushP := fs.Bool("FP", false, "flush the SPD")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: ipsecstack setkey [--control PATH] [-f FILE | -c | -D | -DP | -F | -FP]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	var name, src string
	n := 0
	for _, b := range []bool{*file != "", *stdin, *dump, *dumpP, *flush, *flushP} {
		if b {
			n++
		}
	}
	if n != 1 {
		fs.Usage()
		return fmt.Errorf("%w: give exactly one of -f, -c, -D, -DP, -F, -FP", errUsage)
	}
	switch {
	case *file != "":
		b, err := os.ReadFile(*file)
		if err != nil {
			return err
		}
		name, src = *file, string(b)
	case *stdin:
		b, err := io.ReadAll(bufio.NewReader(os.Stdin))
		if err != nil {
			return err
		}
		name, src = "<stdin>", string(b)
	case *dump:
		name, src = "-D", "dump;"
	case *dumpP:
		name, src = "-DP", "spddump;"
	case *flush:
		name, src = "-F", "flush;"
	case *flushP:
		name, src = "-FP", "spdflush;"
	}
	stmts, err := setkey.Parse(name, src)
	if err != nil {
		return err
	}
	c, err := control.Dial(*path)
	if err != nil {
		return err
	}
	defer c.Close()
	return setkey.Execute(c, stmts, os.Stdout, name)
}
