package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

const (
	hostsFile    = "hosts.toml"
	backupSuffix = ".lifeboat-backup"
)

// hostsState is what is on disk for one registry.
type hostsState struct {
	dir, file, backup string
	dirExists         bool
	cur               []byte // hosts.toml, nil if absent
	curExists         bool
	backupExists      bool
}

func (c configureConfig) state(r registryTarget) (hostsState, error) {
	s := hostsState{dir: filepath.Join(c.HostsDir, r.Name)}
	s.file = filepath.Join(s.dir, hostsFile)
	s.backup = s.file + backupSuffix
	var err error
	if s.dirExists, err = exists(s.dir); err != nil {
		return s, err
	}
	if s.backupExists, err = exists(s.backup); err != nil {
		return s, err
	}
	s.cur, err = os.ReadFile(s.file)
	switch {
	case err == nil:
		s.curExists = true
	case !errors.Is(err, fs.ErrNotExist):
		return s, err
	}
	return s, nil
}

// writeHosts makes r's hosts.toml send containerd to lifeboat first, and
// says in a few words what it did.
func (c configureConfig) writeHosts(r registryTarget) (string, error) {
	s, err := c.state(r)
	if err != nil {
		return "", err
	}
	o := hostsOptions{Mirror: c.Mirror, DialTimeout: c.DialTimeout}
	switch {
	case !s.curExists && s.backupExists:
		return "", fmt.Errorf("%s exists but %s does not: move the backup back (or away) first", s.backup, s.file)

	case !s.curExists:
		if err := mkdirs(s.dir); err != nil {
			return "", err
		}
		if err := writeFileAtomic(s.file, renderHosts(r, o, !s.dirExists)); err != nil {
			return "", err
		}
		return "wrote " + s.file, nil

	case isLifeboats(s.cur):
		var want []byte
		switch {
		case s.backupExists && !c.Force:
			orig, err := os.ReadFile(s.backup)
			if err != nil {
				return "", err
			}
			if want, err = mergeHosts(orig, r, o); err != nil {
				return "", fmt.Errorf("cannot merge with the backup %s: %w; rerun with --force to replace it with lifeboat's own", s.backup, err)
			}
		case !s.backupExists && hasMarker(s.cur, mergedLine) && !c.Force:
			return "", fmt.Errorf("%s was merged with the original in %s, which is gone: put it back, or rerun with --force to replace the file with lifeboat's own", s.file, s.backup)
		default:
			want = renderHosts(r, o, hasMarker(s.cur, createdDirLine))
		}
		if bytes.Equal(s.cur, want) {
			return "unchanged " + s.file, nil
		}
		if err := writeFileAtomic(s.file, want); err != nil {
			return "", err
		}
		return "updated " + s.file, nil

	default: // a file lifeboat did not write
		if s.backupExists {
			return "", fmt.Errorf("%s was not written by lifeboat, and %s (from an earlier run) exists: move one of them away", s.file, s.backup)
		}
		want, did := renderHosts(r, o, false), "replaced"
		if !c.Force {
			if want, err = mergeHosts(s.cur, r, o); err != nil {
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
}

// removeHosts undoes writeHosts for r.
func (c configureConfig) removeHosts(r registryTarget) (string, error) {
	s, err := c.state(r)
	if err != nil {
		return "", err
	}
	switch {
	case !s.curExists && s.backupExists, s.curExists && isLifeboats(s.cur) && s.backupExists:
		if err := os.Rename(s.backup, s.file); err != nil {
			return "", err
		}
		if err := syncDir(s.dir); err != nil {
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

// shadowingDirs warns about directories containerd reads before
// <hosts-dir>/<name>: for host:port it looks for host_port_ first.
func shadowingDirs(hostsDir, name string) []string {
	i := strings.LastIndex(name, ":")
	if i <= 0 {
		return nil
	}
	alt := filepath.Join(hostsDir, name[:i]+"_"+name[i+1:]+"_")
	if ok, _ := exists(alt); !ok {
		return nil
	}
	return []string{fmt.Sprintf("containerd reads %s before %s, so the file written for %s is ignored while it exists", alt, filepath.Join(hostsDir, name), name)}
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// mkdirs creates dir and its missing parents with mode 0755 whatever the
// umask.
func mkdirs(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		ok, err := exists(d)
		if err != nil {
			return err
		}
		if ok || d == filepath.Dir(d) {
			break
		}
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := os.Chmod(missing[i], 0o755); err != nil {
			return err
		}
	}
	return nil
}

// writeFileAtomic replaces path with data (mode 0644): a temporary file
// in the same directory, fsynced, renamed over path, the directory fsynced.
// containerd reads either the old file or the new one, never half of one.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".lifeboat-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// backupFile keeps file's current contents at backup, which must not
// exist: a hard link to the same inode (bytes, mode and owner untouched
// when the file is then replaced by a rename), or a copy where links are
// not supported.
func backupFile(file, backup string) error {
	err := os.Link(file, backup)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("backup %s already exists", backup)
	}
	if err != nil {
		fi, statErr := os.Stat(file)
		if statErr != nil {
			return statErr
		}
		data, readErr := os.ReadFile(file)
		if readErr != nil {
			return readErr
		}
		f, createErr := os.OpenFile(backup, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
		if createErr != nil {
			return createErr
		}
		_, err = f.Write(data)
		if err == nil {
			err = f.Sync()
		}
		if closeErr := f.Close(); err == nil {
			err = closeErr
		}
		if err != nil {
			os.Remove(backup)
			return err
		}
	}
	return syncDir(filepath.Dir(backup))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
