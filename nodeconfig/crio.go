package nodeconfig

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// CRIODropIn is the file lifeboat writes in registries.conf.d. Drop-ins are
// read in name order after registries.conf, and a [[registry]] in one
// replaces any earlier [[registry]] with the same prefix: 50 leaves room on
// both sides.
const CRIODropIn = "50-lifeboat.conf"

// CRIO points CRI-O at lifeboat: the drop-in <ConfDir>/50-lifeboat.conf
// holds, for each registry, a [[registry]] whose first mirror is lifeboat
// at <Mirror host>/<registry> (the registry as a path prefix, host:port
// written host_port), so that CRI-O, and podman, skopeo and buildah with
// it (they all pull with containers/image), try lifeboat first and the
// registry itself when lifeboat is unreachable or answers an error.
//
// The drop-in is lifeboat's alone, but its [[registry]] for a prefix
// replaces the one registries.conf or an earlier drop-in has: such an
// entry is merged (its location, settings and mirrors kept, after
// lifeboat's mirror), unless Force. A later drop-in with the same prefix
// would replace lifeboat's: that is refused as a conflict. Apply run twice
// writes the same bytes; Remove undoes it.
type CRIO struct {
	// Root is where the host's filesystem is, when it is not / (a
	// container with the host's root mounted): ConfDir and RegistriesConf
	// are host paths, read and written under Root, and so named in the
	// drop-in and in messages. Empty: /.
	Root string
	// ConfDir is the registries.conf.d directory
	// (/etc/containers/registries.conf.d). Required.
	ConfDir string
	// RegistriesConf is the main registries.conf, read for entries to
	// merge and settings to warn about. Empty: none.
	RegistriesConf string
	// Mirror is lifeboat's URL as CRI-O reaches it, as ParseMirror
	// returns it. Required.
	Mirror string
	// Force writes lifeboat's own entries without merging the team's, and
	// replaces a 50-lifeboat.conf lifeboat did not write (backed up first).
	Force bool
}

// CRIOReport says what Apply or Remove did, in lines for the person
// running configure-crio.
type CRIOReport struct {
	// Lines: one per merged registry, then what happened to the file.
	Lines []string
	// Warnings: settings elsewhere that keep pulls from lifeboat.
	Warnings []string
	// Changed: the drop-in was written, removed or restored, so CRI-O
	// must reload its registries to see it (see ReloadCRIO).
	Changed bool
}

// dropInState is what is on disk of lifeboat's drop-in.
type dropInState struct {
	file, backup string
	dirExists    bool
	cur          []byte
	curExists    bool
	backupExists bool
}

func (c CRIO) state() (dropInState, error) {
	if c.ConfDir == "" {
		return dropInState{}, errors.New("no registries.conf.d directory")
	}
	s := dropInState{file: filepath.Join(c.ConfDir, CRIODropIn)}
	s.backup = s.file + backupSuffix
	var err error
	if s.dirExists, err = exists(c.at(c.ConfDir)); err != nil {
		return s, err
	}
	if s.backupExists, err = exists(c.at(s.backup)); err != nil {
		return s, err
	}
	s.cur, s.curExists, err = readIfExists(c.at(s.file))
	return s, err
}

// Apply writes the drop-in for targets. It refuses a name that cannot be a
// path prefix, a [[registry]] of a later drop-in that would replace
// lifeboat's, and a 50-lifeboat.conf lifeboat did not write (without
// Force); it never overwrites a backup.
func (c CRIO) Apply(targets []Target) (CRIOReport, error) {
	if c.Mirror == "" {
		return CRIOReport{}, errors.New("no mirror")
	}
	if len(targets) == 0 {
		return CRIOReport{}, errors.New("no registries")
	}
	for _, t := range targets {
		if err := checkPrefixName(t.Name); err != nil {
			return CRIOReport{}, err
		}
	}
	s, err := c.state()
	if err != nil {
		return CRIOReport{}, err
	}
	ours := s.curExists && isCRIOLifeboats(s.cur)
	switch {
	case !s.curExists && s.backupExists:
		return CRIOReport{}, fmt.Errorf("%s exists but %s does not: move the backup back (or away) first", s.backup, s.file)
	case s.curExists && !ours && s.backupExists:
		return CRIOReport{}, fmt.Errorf("%s was not written by lifeboat, and %s (from an earlier run) exists: move one of them away", s.file, s.backup)
	case s.curExists && !ours && !c.Force:
		return CRIOReport{}, fmt.Errorf("%s exists and was not written by lifeboat: rename it, or rerun with --force to replace it (it is backed up first)", s.file)
	}
	conf, err := c.readOthers()
	if err != nil {
		return CRIOReport{}, err
	}
	entries, rep, err := c.entries(targets, conf)
	if err != nil {
		return CRIOReport{}, err
	}
	createdDir := !s.dirExists || (ours && hasMarker(s.cur, createdDirLine))
	want := c.render(entries, createdDir)
	rep.Warnings = append(rep.Warnings, c.warnings(targets, entries, conf)...)
	switch {
	case ours && bytes.Equal(s.cur, want):
		rep.Lines = append(rep.Lines, "unchanged "+s.file)
		return rep, nil
	case s.curExists && !ours: // Force: keep the original first
		if err := backupFile(c.at(s.file), c.at(s.backup)); err != nil {
			return CRIOReport{}, err
		}
		if err := writeFileAtomic(c.at(s.file), want); err != nil {
			_ = os.Remove(c.at(s.backup)) // the original is intact: a rerun starts over
			return CRIOReport{}, err
		}
		rep.Lines = append(rep.Lines, fmt.Sprintf("replaced %s, backup at %s", s.file, s.backup))
	default:
		if err := mkdirs(c.at(c.ConfDir)); err != nil {
			return CRIOReport{}, err
		}
		if err := writeFileAtomic(c.at(s.file), want); err != nil {
			return CRIOReport{}, err
		}
		did := "wrote "
		if ours {
			did = "updated "
		}
		rep.Lines = append(rep.Lines, did+s.file)
	}
	rep.Changed = true
	return rep, nil
}

// Remove undoes Apply: it restores the backup, byte for byte, or removes
// lifeboat's drop-in (and the directory if lifeboat created it and it is
// empty). A 50-lifeboat.conf lifeboat did not write is left alone.
func (c CRIO) Remove() (CRIOReport, error) {
	s, err := c.state()
	if err != nil {
		return CRIOReport{}, err
	}
	ours := s.curExists && isCRIOLifeboats(s.cur)
	switch {
	case s.backupExists && (!s.curExists || ours):
		if err := restoreBackup(c.at(s.backup), c.at(s.file)); err != nil {
			return CRIOReport{}, err
		}
		return CRIOReport{Lines: []string{fmt.Sprintf("restored %s from %s", s.file, s.backup)}, Changed: true}, nil
	case !s.curExists:
		return CRIOReport{Lines: []string{"nothing to remove at " + s.file}}, nil
	case !ours:
		return CRIOReport{Lines: []string{"left " + s.file + " alone: lifeboat did not write it"}}, nil
	}
	if err := os.Remove(c.at(s.file)); err != nil {
		return CRIOReport{}, err
	}
	rep := CRIOReport{Lines: []string{"removed " + s.file}, Changed: true}
	if hasMarker(s.cur, createdDirLine) {
		err := os.Remove(c.at(c.ConfDir))
		if err == nil {
			rep.Lines[0] += " and its directory"
			return rep, syncDir(filepath.Dir(c.at(c.ConfDir)))
		}
		if !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			return CRIOReport{}, err
		}
	}
	return rep, syncDir(c.at(c.ConfDir))
}

// at is a host path as this process reaches it.
func (c CRIO) at(p string) string {
	if c.Root == "" {
		return p
	}
	return filepath.Join(c.Root, p)
}
