package nodeconfig

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	hostsFile    = "hosts.toml"
	backupSuffix = ".lifeboat-backup"
)

// Containerd points containerd at lifeboat, one registry at a time:
// <HostsDir>/<registry>/hosts.toml names lifeboat (Mirror) as the first
// host, with capabilities pull and resolve, and the registry itself as
// server, containerd's fallback whenever lifeboat is unreachable or answers
// an error.
//
// A hosts.toml lifeboat did not write is backed up to
// hosts.toml.lifeboat-backup (never overwriting an earlier backup) and
// merged: lifeboat's host first, then the file's own hosts, text and order
// unchanged, its own server still the fallback. Apply run twice writes the
// same bytes; Remove undoes it.
type Containerd struct {
	// HostsDir is containerd's registry host directory, its config_path
	// (/etc/containerd/certs.d). Required.
	HostsDir string
	// Mirror is lifeboat's URL as containerd reaches it, as ParseMirror
	// returns it. Required.
	Mirror string
	// DialTimeout is how long containerd 2.x tries to connect to lifeboat
	// before it uses the next host. Zero writes no dial_timeout:
	// containerd's default, 30s. containerd 1.x ignores it.
	DialTimeout time.Duration
	// Force writes lifeboat's own hosts.toml instead of merging with an
	// existing one (which is still backed up first), and instead of
	// refusing when a merged file's backed-up original is gone.
	Force bool
}

// hostsState is what is on disk for one registry.
type hostsState struct {
	dir, file, backup string
	dirExists         bool
	cur               []byte // hosts.toml, nil if absent
	curExists         bool
	backupExists      bool
}

func (c Containerd) state(t Target) (hostsState, error) {
	// The name becomes a path: check it even though ParseTarget did.
	if err := checkName(t.Name); err != nil {
		return hostsState{}, err
	}
	if c.HostsDir == "" {
		return hostsState{}, errors.New("no hosts directory")
	}
	s := hostsState{dir: filepath.Join(c.HostsDir, t.Name)}
	s.file = filepath.Join(s.dir, hostsFile)
	s.backup = s.file + backupSuffix
	var err error
	if s.dirExists, err = exists(s.dir); err != nil {
		return s, err
	}
	if s.backupExists, err = exists(s.backup); err != nil {
		return s, err
	}
	s.cur, s.curExists, err = readIfExists(s.file)
	return s, err
}

// Apply makes t's hosts.toml send containerd to lifeboat first, and says in
// a few words what it did ("wrote <file>", "unchanged <file>", ...). It
// refuses a t.Name that is not a registry host (the name becomes a
// directory), and a file it can neither merge with nor, without Force,
// replace; it never overwrites a backup.
func (c Containerd) Apply(t Target) (string, error) {
	if c.Mirror == "" {
		return "", errors.New("no mirror")
	}
	s, err := c.state(t)
	if err != nil {
		return "", err
	}
	switch {
	case !s.curExists && s.backupExists:
		return "", fmt.Errorf("%s exists but %s does not: move the backup back (or away) first", s.backup, s.file)

	case !s.curExists:
		if err := mkdirs(s.dir); err != nil {
			return "", err
		}
		if err := writeFileAtomic(s.file, c.renderHosts(t, !s.dirExists)); err != nil {
			return "", err
		}
		return "wrote " + s.file, nil

	case isLifeboats(s.cur):
		return c.rewrite(t, s)

	default: // a file lifeboat did not write
		return c.takeOver(t, s)
	}
}

// rewrite brings a hosts.toml lifeboat wrote up to date: its own, or the
// backed-up original merged again.
func (c Containerd) rewrite(t Target, s hostsState) (string, error) {
	var want []byte
	switch {
	case s.backupExists && !c.Force:
		orig, err := os.ReadFile(s.backup)
		if err != nil {
			return "", err
		}
		if want, err = c.mergeHosts(orig, t); err != nil {
			return "", fmt.Errorf("cannot merge with the backup %s: %w; rerun with --force to replace it with lifeboat's own", s.backup, err)
		}
	case !s.backupExists && hasMarker(s.cur, mergedLine) && !c.Force:
		return "", fmt.Errorf("%s was merged with the original in %s, which is gone: put it back, or rerun with --force to replace the file with lifeboat's own", s.file, s.backup)
	default:
		want = c.renderHosts(t, hasMarker(s.cur, createdDirLine))
	}
	if bytes.Equal(s.cur, want) {
		return "unchanged " + s.file, nil
	}
	if err := writeFileAtomic(s.file, want); err != nil {
		return "", err
	}
	return "updated " + s.file, nil
}

// takeOver backs up a hosts.toml lifeboat did not write and replaces it
// with the merge, or with lifeboat's own under Force.
func (c Containerd) takeOver(t Target, s hostsState) (string, error) {
	if s.backupExists {
		return "", fmt.Errorf("%s was not written by lifeboat, and %s (from an earlier run) exists: move one of them away", s.file, s.backup)
	}
	want, did := c.renderHosts(t, false), "replaced"
	if !c.Force {
		var err error
		if want, err = c.mergeHosts(s.cur, t); err != nil {
			return "", fmt.Errorf("cannot merge with the existing %s: %w; fix it, or rerun with --force to replace it (it is backed up first)", s.file, err)
		}
		did = "merged with the existing hosts of"
	}
	if err := backupFile(s.file, s.backup); err != nil {
		return "", err
	}
	if err := writeFileAtomic(s.file, want); err != nil {
		// The original is intact: drop the backup so a rerun starts over.
		_ = os.Remove(s.backup)
		return "", err
	}
	return fmt.Sprintf("%s %s, backup at %s", did, s.file, s.backup), nil
}

// Remove undoes Apply for t: it restores the backup, byte for byte, or
// removes lifeboat's file (and the registry's directory if lifeboat created
// it and it is empty). A file lifeboat did not write is left alone. It says
// in a few words what it did.
func (c Containerd) Remove(t Target) (string, error) {
	s, err := c.state(t)
	if err != nil {
		return "", err
	}
	switch {
	case !s.curExists && s.backupExists, s.curExists && isLifeboats(s.cur) && s.backupExists:
		if err := restoreBackup(s.backup, s.file); err != nil {
			return "", err
		}
		return fmt.Sprintf("restored %s from %s", s.file, s.backup), nil

	case !s.curExists:
		return "nothing to remove at " + s.file, nil

	case !isLifeboats(s.cur):
		return "left " + s.file + " alone: lifeboat did not write it", nil

	case hasMarker(s.cur, mergedLine):
		return "", fmt.Errorf("cannot restore %s: it was merged with the original in %s, which is gone; left in place", s.file, s.backup)
	}
	if err := os.Remove(s.file); err != nil {
		return "", err
	}
	if hasMarker(s.cur, createdDirLine) {
		err := os.Remove(s.dir)
		if err == nil {
			return fmt.Sprintf("removed %s and its directory", s.file), syncDir(filepath.Dir(s.dir))
		}
		if !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			return "", err
		}
	}
	return "removed " + s.file, syncDir(s.dir)
}

// CheckShadowing warns about a directory containerd reads before
// <HostsDir>/<t.Name>, which hides t's hosts.toml: for host:port,
// containerd looks for host_port_ first. It returns no warnings for a name
// without a port.
func (c Containerd) CheckShadowing(t Target) []string {
	i := strings.LastIndex(t.Name, ":")
	if i <= 0 {
		return nil
	}
	alt := filepath.Join(c.HostsDir, t.Name[:i]+"_"+t.Name[i+1:]+"_")
	if ok, _ := exists(alt); !ok {
		return nil
	}
	return []string{fmt.Sprintf("containerd reads %s before %s, so the file written for %s is ignored while it exists", alt, filepath.Join(c.HostsDir, t.Name), t.Name)}
}
