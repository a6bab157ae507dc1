// Package nodeconfig writes and removes the container runtime configuration
// that sends a node's image pulls to lifeboat first, keeping the real
// registry as the runtime's fallback so that a dead lifeboat never blocks a
// pull.
//
// It owns, for containerd (Containerd): rendering lifeboat's
// <hosts-dir>/<registry>/hosts.toml, merging it with a file lifeboat did not
// write, backing that file up and restoring it byte for byte, and checking
// that containerd's own config reads the directory (CheckContainerdConfig).
// What is not containerd's: the registries to configure (Target,
// ParseTarget), lifeboat's URL (ParseMirror), and crash-safe file writes
// (a temporary file, fsynced, renamed into place, the directory fsynced).
//
// A CRI-O writer (a registries.conf.d drop-in with a mirror per registry)
// belongs beside Containerd, sharing Target, ParseMirror and the file writes.
//
// nodeconfig knows nothing of flags, environment variables, HTTP or metrics,
// and imports no other lifeboat package: cmd/lifeboat parses the command
// line and prints what these functions return. The messages and errors are
// written for the person running `lifeboat configure-containerd`, and name
// its flags.
package nodeconfig
