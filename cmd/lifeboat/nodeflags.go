package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// parseNodeFlags parses the flags of a configure-* command, then fills each
// flag not given from its LIFEBOAT_* variable: defaults < env < flags.
// --help prints usage and the flags to stdout.
func parseNodeFlags(fs *flag.FlagSet, usage string, args []string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.VisitAll(func(f *flag.Flag) { f.Usage += " (env " + envName(f.Name) + ")" })
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if set[f.Name] || !ok || envErr != nil {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
		}
	})
	return envErr
}

// nodeScope is where a configure-* command finds the node's files: under
// --host-root when the host's filesystem is mounted somewhere else (the
// chart's runtime: auto), and only when --only-if-present finds the runtime.
type nodeScope struct {
	root    string   // "" or "/": the paths are the command's own
	present []string // host paths; one must exist, else nothing is done; none: always
}

func addNodeScopeFlags(fs *flag.FlagSet, s *nodeScope, runtime string) {
	fs.StringVar(&s.root, "host-root", "", "the host's root directory as this command sees it: every other path is a host path read and written under it (empty: /)")
	fs.Func("only-if-present", "comma-separated host paths (sockets, config files) that show "+runtime+" is on this node: when none exists, do nothing and succeed; --remove always runs", func(v string) error {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				s.present = append(s.present, p)
			}
		}
		return nil
	})
}

// path is a host path as this command reaches it.
func (s nodeScope) path(p string) string {
	if s.root == "" || p == "" {
		return p
	}
	return filepath.Join(s.root, p)
}

// found says whether the runtime is on this node, and why (or why not).
func (s nodeScope) found() (bool, string) {
	if len(s.present) == 0 {
		return true, ""
	}
	for _, p := range s.present {
		if _, err := os.Lstat(s.path(p)); err == nil {
			return true, p + " exists"
		}
	}
	return false, "none of " + strings.Join(s.present, ", ") + " exists"
}

func printWarnings(stderr io.Writer, cmd string, warnings []string) {
	for _, w := range warnings {
		fmt.Fprintf(stderr, "lifeboat %s: warning: %s\n", cmd, w)
	}
}
