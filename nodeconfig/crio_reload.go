package nodeconfig

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrNoCRIO is ReloadCRIO's answer when no crio process is visible.
var ErrNoCRIO = errors.New("no crio process found")

// ReloadCRIO sends SIGHUP to each crio process listed in proc (the host's
// /proc: a container needs the host's PID namespace). CRI-O then reads
// registries.conf and its drop-ins again (crio.conf(5)); until it does, or
// restarts, it pulls as before. It says what it signalled.
func ReloadCRIO(proc string) (string, error) {
	dir, err := os.ReadDir(proc)
	if err != nil {
		return "", err
	}
	var pids []string
	for _, e := range dir {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(proc, e.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "crio" {
			continue // gone meanwhile, or another program
		}
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				continue
			}
			return "", fmt.Errorf("SIGHUP to crio (pid %d): %w", pid, err)
		}
		pids = append(pids, e.Name())
	}
	if len(pids) == 0 {
		return "", fmt.Errorf("%w in %s", ErrNoCRIO, proc)
	}
	return fmt.Sprintf("sent SIGHUP to crio (pid %s): it reads the registries configuration again", strings.Join(pids, ", ")), nil
}
