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
// For CRI-O (CRIO): rendering the registries.conf.d drop-in 50-lifeboat.conf
// with a [[registry]] per registry whose first mirror is lifeboat at
// <host>/<registry> (host:port written host_port, the path prefix lifeboat's
// registry package routes by), merging the entries registries.conf or an
// earlier drop-in has for the same prefix, refusing a later drop-in's,
// warning about settings that keep pulls from lifeboat, and making CRI-O
// read it (ReloadCRIO: SIGHUP).
//
// nodeconfig knows nothing of flags, environment variables, HTTP or metrics,
// and imports no other lifeboat package: cmd/lifeboat parses the command
// line and prints what these functions return. The messages and errors are
// written for the person running `lifeboat configure-containerd` or
// `lifeboat configure-crio`, and name their flags.
package nodeconfig
