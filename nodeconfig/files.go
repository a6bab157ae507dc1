package nodeconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The file operations below are crash-safe: each ends by fsyncing the
// directory it changed, so after a crash the runtime reads either the old
// file or the new one, never half of one, and a backup is never lost.

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// readIfExists reads path; a missing file is no error.
func readIfExists(path string) (data []byte, found bool, err error) {
	data, err = os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	return data, err == nil, err
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
// The runtime reads either the old file or the new one, never half of one.
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

// restoreBackup puts backup back at file, replacing what is there: the
// original's bytes, mode and owner, since it is the same inode.
func restoreBackup(backup, file string) error {
	if err := os.Rename(backup, file); err != nil {
		return err
	}
	return syncDir(filepath.Dir(file))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
