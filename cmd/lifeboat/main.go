// Command lifeboat is a node-local pull-through cache for container images.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `lifeboat: a node-local pull-through cache for container images.

Usage:
  lifeboat serve [flags]    serve the OCI pull API (see lifeboat serve --help)
  lifeboat configure-containerd [flags]  write containerd's hosts.toml for lifeboat (see --help)
  lifeboat configure-crio [flags]  write CRI-O's registries.conf.d drop-in for lifeboat (see --help)
  lifeboat doctor [flags]   check that this node's runtime pulls through lifeboat (see --help)
  lifeboat ls               list the cached images
  lifeboat gc [--dry-run]   evict now (least recently used first; pins kept)
  lifeboat verify [--repair]  re-hash every cached blob
  lifeboat prefetch REF...  fetch images into the cache (--pin: never evict them)
  lifeboat unpin REF...     remove a pin made by prefetch --pin
  lifeboat version          print the version

containerd reaches lifeboat through /etc/containerd/certs.d/<registry>/hosts.toml,
CRI-O through /etc/containers/registries.conf.d/50-lifeboat.conf; see the README
for the files to write.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stderr)
	case "configure-containerd":
		err = configureContainerd(ctx, args[1:], stdout, stderr)
	case "configure-crio":
		err = configureCRIO(ctx, args[1:], stdout, stderr)
	case "doctor":
		err = doctor(ctx, args[1:], stdout, stderr)
	case "ls":
		err = ls(ctx, args[1:], stdout, stderr)
	case "gc":
		err = gc(ctx, args[1:], stdout, stderr)
	case "verify":
		err = verify(ctx, args[1:], stdout, stderr)
	case "prefetch":
		err = prefetch(ctx, args[1:], stdout, stderr)
	case "unpin":
		err = unpin(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, versionString())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "lifeboat: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errDoctorFailed) {
		return 1
	}
	if errors.Is(err, errDamaged) {
		return 3
	}
	if err != nil {
		fmt.Fprintf(stderr, "lifeboat %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func versionString() string {
	s := "lifeboat " + version
	if bi, ok := debug.ReadBuildInfo(); ok {
		s += " " + bi.GoVersion
		for _, kv := range bi.Settings {
			if kv.Key == "vcs.revision" {
				s += " " + kv.Value
			}
		}
	}
	return s
}
