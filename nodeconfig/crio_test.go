package nodeconfig

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pelletier/go-toml/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var localhost5001 = Target{Name: "localhost:5001", Server: "http://localhost:5001"}

// newCRIO is configure-crio's defaults under a fresh root: ConfDir and
// RegistriesConf are host paths below it.
func newCRIO(t *testing.T) CRIO {
	t.Helper()
	return CRIO{Root: t.TempDir(), ConfDir: "/etc/containers/registries.conf.d",
		RegistriesConf: "/etc/containers/registries.conf", Mirror: testMirror}
}

// hostFile writes a file at a host path under c.Root.
func hostFile(t *testing.T, c CRIO, path, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(c.at(path)), 0o755))
	require.NoError(t, os.WriteFile(c.at(path), []byte(content), 0o644))
}

func mustApplyCRIO(t *testing.T, c CRIO, targets ...Target) CRIOReport {
	t.Helper()
	rep, err := c.Apply(targets)
	require.NoError(t, err)
	return rep
}

// readDropIn is lifeboat's drop-in as containers/image reads it.
func readDropIn(t *testing.T, c CRIO) ([]byte, registriesFile) {
	t.Helper()
	raw, err := os.ReadFile(c.at(filepath.Join(c.ConfDir, CRIODropIn)))
	require.NoError(t, err)
	var rf registriesFile
	require.NoError(t, toml.Unmarshal(raw, &rf), "%s", raw)
	return raw, rf
}

func TestCRIOWritesTheDropIn(t *testing.T) {
	t.Parallel()
	c := newCRIO(t)
	file := filepath.Join(c.ConfDir, CRIODropIn)
	rep := mustApplyCRIO(t, c, dockerIO, ghcrIO, localhost5001)
	assert.Equal(t, CRIOReport{Lines: []string{"wrote " + file}, Changed: true}, rep, "no registries.conf: nothing to merge or warn about")

	raw, rf := readDropIn(t, c)
	assert.True(t, strings.HasPrefix(string(raw), "# Written by lifeboat configure-crio;"))
	assert.Contains(t, string(raw), createdDirLine, "the directory was created")
	assert.Equal(t, []registryEntry{
		{Prefix: "docker.io", Location: "docker.io", Mirrors: []mirrorEntry{{Location: "127.0.0.1:5000/docker.io", Insecure: true, PullFromMirror: "all"}}},
		{Prefix: "ghcr.io", Location: "ghcr.io", Mirrors: []mirrorEntry{{Location: "127.0.0.1:5000/ghcr.io", Insecure: true, PullFromMirror: "all"}}},
		{Prefix: "localhost:5001", Location: "localhost:5001", Insecure: true,
			Mirrors: []mirrorEntry{{Location: "127.0.0.1:5000/localhost_5001", Insecure: true, PullFromMirror: "all"}}},
	}, rf.Registries, "host:port is host_port in the path; an http server is insecure")

	fi, err := os.Stat(c.at(file))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	entries, err := os.ReadDir(c.at(c.ConfDir))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file left behind")

	// An https mirror is not insecure.
	c = newCRIO(t)
	c.Mirror = "https://lifeboat.internal:5443"
	mustApplyCRIO(t, c, dockerIO)
	_, rf = readDropIn(t, c)
	assert.Equal(t, []mirrorEntry{{Location: "lifeboat.internal:5443/docker.io", PullFromMirror: "all"}}, rf.Registries[0].Mirrors)
}

func TestCRIOIsIdempotentAndRemoves(t *testing.T) {
	t.Parallel()
	c := newCRIO(t)
	file := filepath.Join(c.ConfDir, CRIODropIn)
	mustApplyCRIO(t, c, dockerIO)
	first, _ := readDropIn(t, c)
	rep := mustApplyCRIO(t, c, dockerIO)
	assert.Equal(t, CRIOReport{Lines: []string{"unchanged " + file}}, rep, "nothing changed: no reload")
	second, _ := readDropIn(t, c)
	assert.Equal(t, first, second)

	c.Mirror = "http://127.0.0.1:6000"
	rep = mustApplyCRIO(t, c, dockerIO)
	assert.Equal(t, CRIOReport{Lines: []string{"updated " + file}, Changed: true}, rep)
	raw, _ := readDropIn(t, c)
	assert.Contains(t, string(raw), createdDirLine, "kept across rewrites: --remove still deletes the directory")
	assert.NoFileExists(t, c.at(file+backupSuffix), "lifeboat's own file is never backed up")

	rep, err := c.Remove()
	require.NoError(t, err)
	assert.Equal(t, CRIOReport{Lines: []string{"removed " + file + " and its directory"}, Changed: true}, rep)
	assert.NoDirExists(t, c.at(c.ConfDir))
	rep, err = c.Remove()
	require.NoError(t, err)
	assert.Equal(t, CRIOReport{Lines: []string{"nothing to remove at " + file}}, rep)

	// A directory that was there before is kept.
	hostFile(t, c, filepath.Join(c.ConfDir, "shortnames.conf"), "[aliases]\n\"alpine\" = \"docker.io/library/alpine\"\n")
	mustApplyCRIO(t, c, dockerIO)
	rep, err = c.Remove()
	require.NoError(t, err)
	assert.Equal(t, []string{"removed " + file}, rep.Lines)
	assert.FileExists(t, c.at(filepath.Join(c.ConfDir, "shortnames.conf")))
}

// teamRegistries is a registries.conf with the team's own entries.
const teamRegistries = `unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"
mirror-by-digest-only = true

[[registry.mirror]]
location = "mirror.gcr.io"

[[registry.mirror]]
location = "127.0.0.1:5000/docker.io"

[[registry]]
location = "ghcr.io/"
insecure = true

[[registry.mirror]]
location = "ghcr-mirror.internal"
insecure = true
pull-from-mirror = "tag-only"

[[registry]]
location = "ghcr.io"
blocked = true
`

func TestCRIOMergesTheTeamsEntries(t *testing.T) {
	t.Parallel()
	c := newCRIO(t)
	hostFile(t, c, c.RegistriesConf, teamRegistries)
	rep := mustApplyCRIO(t, c, dockerIO, ghcrIO, quayIO)
	assert.Equal(t, []string{
		"docker.io: merged with its [[registry]] in " + c.RegistriesConf,
		"ghcr.io: merged with its [[registry]] in " + c.RegistriesConf,
		"wrote " + filepath.Join(c.ConfDir, CRIODropIn),
	}, rep.Lines)
	assert.Empty(t, rep.Warnings)

	raw, rf := readDropIn(t, c)
	lifeboat := func(r string) mirrorEntry {
		return mirrorEntry{Location: "127.0.0.1:5000/" + r, Insecure: true, PullFromMirror: "all"}
	}
	assert.Equal(t, []registryEntry{
		// mirror-by-digest-only said per mirror, so that lifeboat gets
		// tags; lifeboat's mirror written by hand is not listed twice.
		{Prefix: "docker.io", Location: "docker.io", Mirrors: []mirrorEntry{lifeboat("docker.io"), {Location: "mirror.gcr.io", PullFromMirror: "digest-only"}}},
		// The first entry of a prefix is the one containers/image uses.
		{Prefix: "ghcr.io", Location: "ghcr.io", Insecure: true, Mirrors: []mirrorEntry{lifeboat("ghcr.io"),
			{Location: "ghcr-mirror.internal", Insecure: true, PullFromMirror: "tag-only"}}},
		{Prefix: "quay.io", Location: "quay.io", Mirrors: []mirrorEntry{lifeboat("quay.io")}},
	}, rf.Registries)
	assert.Contains(t, string(raw), "# Merged with the [[registry]] for docker.io in /etc/containers/registries.conf:", "host paths, not the root's")

	// An earlier drop-in's entry replaces registries.conf's: it is the one merged.
	hostFile(t, c, filepath.Join(c.ConfDir, "10-team.conf"), "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"quay-mirror.internal\"\n")
	rep = mustApplyCRIO(t, c, quayIO)
	assert.Equal(t, "quay.io: merged with its [[registry]] in "+filepath.Join(c.ConfDir, "10-team.conf"), rep.Lines[0])
	_, rf = readDropIn(t, c)
	assert.Equal(t, []mirrorEntry{lifeboat("quay.io"), {Location: "quay-mirror.internal"}}, rf.Registries[0].Mirrors)

	// Force: lifeboat's own entries.
	c.Force = true
	rep = mustApplyCRIO(t, c, dockerIO)
	assert.Equal(t, []string{"updated " + filepath.Join(c.ConfDir, CRIODropIn)}, rep.Lines)
	_, rf = readDropIn(t, c)
	assert.Equal(t, []registryEntry{{Prefix: "docker.io", Location: "docker.io", Mirrors: []mirrorEntry{lifeboat("docker.io")}}}, rf.Registries)
}

func TestCRIORefusesALaterDropInForTheSamePrefix(t *testing.T) {
	t.Parallel()
	c := newCRIO(t)
	later := filepath.Join(c.ConfDir, "99-team.conf")
	hostFile(t, c, later, "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n")
	hostFile(t, c, filepath.Join(c.ConfDir, "99-other.conf.disabled"), "[[registry]]\nlocation = \"ghcr.io\"\n") // not read
	for _, force := range []bool{false, true} {
		c.Force = force
		_, err := c.Apply([]Target{dockerIO, ghcrIO})
		require.Error(t, err)
		assert.Equal(t, later+", read after 50-lifeboat.conf, has its own [[registry]] for docker.io, which replaces lifeboat's: "+
			`add the mirror location = "127.0.0.1:5000/docker.io" to it first, or leave docker.io out of --registries`, err.Error())
		assert.NoFileExists(t, c.at(filepath.Join(c.ConfDir, CRIODropIn)))
	}
}

func TestCRIOKeepsAForeignFile(t *testing.T) {
	t.Parallel()
	c := newCRIO(t)
	file := filepath.Join(c.ConfDir, CRIODropIn)
	const theirs = "[[registry]]\nlocation = \"registry.internal\"\n"
	hostFile(t, c, file, theirs)

	_, err := c.Apply([]Target{dockerIO})
	require.Error(t, err)
	assert.Equal(t, file+" exists and was not written by lifeboat: rename it, or rerun with --force to replace it (it is backed up first)", err.Error())
	rep, err := c.Remove()
	require.NoError(t, err)
	assert.Equal(t, []string{"left " + file + " alone: lifeboat did not write it"}, rep.Lines)

	c.Force = true
	rep = mustApplyCRIO(t, c, dockerIO)
	assert.Equal(t, []string{"replaced " + file + ", backup at " + file + backupSuffix}, rep.Lines)
	assert.True(t, rep.Changed)
	assert.Equal(t, CRIOReport{Lines: []string{"unchanged " + file}}, mustApplyCRIO(t, c, dockerIO))

	rep, err = c.Remove()
	require.NoError(t, err)
	assert.Equal(t, []string{"restored " + file + " from " + file + backupSuffix}, rep.Lines)
	got, err := os.ReadFile(c.at(file))
	require.NoError(t, err)
	assert.Equal(t, theirs, string(got), "byte for byte")
	assert.NoFileExists(t, c.at(file+backupSuffix))

	// A backup whose file is gone is never overwritten.
	require.NoError(t, os.Rename(c.at(file), c.at(file+backupSuffix)))
	_, err = c.Apply([]Target{dockerIO})
	require.ErrorContains(t, err, "move the backup back (or away) first")
}

func TestCRIOWarnings(t *testing.T) {
	t.Parallel()
	c := newCRIO(t)
	hostFile(t, c, c.RegistriesConf, `unqualified-search-registries = ["registry.fedoraproject.org", "docker.io"]
short-name-mode = "enforcing"

[[registry]]
location = "quay.io"
blocked = true

[[registry]]
prefix = "docker.io/library"
location = "docker.io/library"

[[registry]]
prefix = "docker.io/team"
location = "docker.io/team"
[[registry.mirror]]
location = "127.0.0.1:5000/docker.io/team"

[[registry]]
prefix = "*.k8s.io"
location = ""
`)
	rep := mustApplyCRIO(t, c, dockerIO, quayIO, Target{Name: "registry.k8s.io", Server: "https://registry.k8s.io"}, Target{Name: "a.k8s.io", Server: "https://a.k8s.io"})
	conf := c.RegistriesConf
	assert.Equal(t, []string{
		"quay.io is blocked (blocked = true, from " + conf + "): CRI-O refuses its images, through lifeboat or not",
		conf + `: [[registry]] prefix "docker.io/library" is more specific than docker.io, so its images are pulled without lifeboat: ` +
			`add a [[registry.mirror]] with location = "127.0.0.1:5000/docker.io/library" to it`,
		conf + `: [[registry]] prefix "*.k8s.io" wins over lifeboat's a.k8s.io (containers/image takes the first of the longest), so a.k8s.io is pulled without lifeboat`,
		conf + ": unqualified-search-registries lists registry.fedoraproject.org, which lifeboat does not mirror: " +
			"an image named without its registry (alpine) is looked for there without lifeboat; name images in full (docker.io/library/alpine)",
		conf + `: short-name-mode = "enforcing" with several unqualified-search-registries: CRI-O tries them in order regardless, ` +
			"but podman and skopeo without a terminal refuse an image named without its registry",
	}, rep.Warnings, "a prefix that has lifeboat's mirror already, and a longer name than a wildcard, are fine")

	// A drop-in's search list replaces registries.conf's.
	hostFile(t, c, filepath.Join(c.ConfDir, "10-search.conf"), "unqualified-search-registries = [\"docker.io\"]\n")
	rep = mustApplyCRIO(t, c, dockerIO)
	for _, w := range rep.Warnings {
		assert.NotContains(t, w, "unqualified-search-registries")
	}
}

func TestCRIOReadsTheV1Format(t *testing.T) {
	t.Parallel()
	c := newCRIO(t)
	hostFile(t, c, c.RegistriesConf, "[registries.search]\nregistries = ['docker.io', 'quay.io']\n[registries.block]\nregistries = ['quay.io']\n[registries.insecure]\nregistries = ['localhost:5001']\n")
	rep := mustApplyCRIO(t, c, dockerIO, quayIO, Target{Name: "localhost:5001", Server: "https://localhost:5001"})
	assert.Equal(t, []string{"quay.io is blocked (blocked = true, from " + c.RegistriesConf + "): CRI-O refuses its images, through lifeboat or not"}, rep.Warnings)
	_, rf := readDropIn(t, c)
	require.Len(t, rf.Registries, 3)
	assert.True(t, rf.Registries[1].Blocked)
	assert.True(t, rf.Registries[2].Insecure, "the v1 insecure list is kept")
}

func TestCRIORefusesWhatItCannotRead(t *testing.T) {
	t.Parallel()
	c := newCRIO(t)
	for _, name := range []string{"", "..", "docker.io/library", "Registry.Example.com"} {
		_, err := c.Apply([]Target{{Name: name, Server: "https://x"}})
		assert.Error(t, err, name)
	}
	hostFile(t, c, c.RegistriesConf, "[[registry]\n")
	_, err := c.Apply([]Target{dockerIO})
	require.ErrorContains(t, err, "cannot read "+c.RegistriesConf+": not valid TOML: line 1")
	assert.NoFileExists(t, c.at(filepath.Join(c.ConfDir, CRIODropIn)))
}

func TestReloadCRIO(t *testing.T) {
	t.Parallel()
	proc := t.TempDir()
	_, err := ReloadCRIO(proc)
	require.ErrorIs(t, err, ErrNoCRIO)

	// A process that SIGHUP ends, listed as crio in a /proc of our own
	// (with SIGHUP's default action even if the tests were started with
	// it ignored, as under nohup: an ignored signal is inherited).
	sleep := exec.Command("env", "--default-signal=HUP", "sleep", "60")
	require.NoError(t, sleep.Start())
	t.Cleanup(func() { _ = sleep.Process.Kill() })
	pid := sleep.Process.Pid
	other := exec.Command("sleep", "60")
	require.NoError(t, other.Start())
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	for p, comm := range map[int]string{pid: "crio\n", other.Process.Pid: "crio-other\n"} {
		dir := filepath.Join(proc, strconv.Itoa(p))
		require.NoError(t, os.Mkdir(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "comm"), []byte(comm), 0o644))
	}
	msg, err := ReloadCRIO(proc)
	require.NoError(t, err)
	assert.Equal(t, "sent SIGHUP to crio (pid "+strconv.Itoa(pid)+"): it reads the registries configuration again", msg)
	err = sleep.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, syscall.SIGHUP, exit.Sys().(syscall.WaitStatus).Signal())
	assert.NoError(t, other.Process.Signal(syscall.Signal(0)), "only crio is signalled: the other still runs")
}
