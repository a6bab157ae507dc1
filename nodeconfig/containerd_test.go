package nodeconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const testMirror = "http://127.0.0.1:5000"

var (
	dockerIO = Target{Name: "docker.io", Server: "https://registry-1.docker.io"}
	ghcrIO   = Target{Name: "ghcr.io", Server: "https://ghcr.io"}
	quayIO   = Target{Name: "quay.io", Server: "https://quay.io"}
)

// newContainerd is configure-containerd's defaults on a fresh hosts
// directory.
func newContainerd(t *testing.T) Containerd {
	t.Helper()
	return Containerd{HostsDir: t.TempDir(), Mirror: testMirror, DialTimeout: time.Second}
}

func mustApply(t *testing.T, c Containerd, target Target) string {
	t.Helper()
	msg, err := c.Apply(target)
	require.NoError(t, err)
	return msg
}

func mustRemove(t *testing.T, c Containerd, target Target) string {
	t.Helper()
	msg, err := c.Remove(target)
	require.NoError(t, err)
	return msg
}

// hostsFileTOML is hosts.toml as containerd reads it.
type hostsFileTOML struct {
	Server string `toml:"server"`
	Host   map[string]struct {
		Capabilities []string          `toml:"capabilities"`
		DialTimeout  string            `toml:"dial_timeout"`
		CA           string            `toml:"ca"`
		SkipVerify   *bool             `toml:"skip_verify"`
		Header       map[string]string `toml:"header"`
	} `toml:"host"`
}

func readHosts(t *testing.T, path string) ([]byte, hostsFileTOML, []string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	var parsed hostsFileTOML
	require.NoError(t, toml.Unmarshal(raw, &parsed), "%s:\n%s", path, raw)
	order, err := hostOrder(raw)
	require.NoError(t, err)
	return raw, parsed, order
}

func TestApplyWritesHostsTOML(t *testing.T) {
	t.Parallel()
	c := newContainerd(t)
	c.HostsDir = filepath.Join(c.HostsDir, "certs.d") // created too
	for _, target := range []Target{dockerIO, ghcrIO,
		{Name: "registry.example.com", Server: "https://registry.example.com"},
		{Name: "localhost:5001", Server: "http://localhost:5001"},
	} {
		file := filepath.Join(c.HostsDir, target.Name, "hosts.toml")
		assert.Equal(t, "wrote "+file, mustApply(t, c, target))

		raw, parsed, order := readHosts(t, file)
		assert.True(t, strings.HasPrefix(string(raw), "# Written by lifeboat configure-containerd;"), target.Name)
		assert.Equal(t, target.Server, parsed.Server, target.Name)
		assert.Equal(t, []string{testMirror}, order, target.Name)
		assert.Equal(t, []string{"pull", "resolve"}, parsed.Host[testMirror].Capabilities, target.Name)
		d, err := time.ParseDuration(parsed.Host[testMirror].DialTimeout)
		require.NoError(t, err, "containerd 2.x ignores the whole file if dial_timeout does not parse")
		assert.Equal(t, time.Second, d)

		fi, err := os.Stat(file)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm(), target.Name)
		di, err := os.Stat(filepath.Dir(file))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o755), di.Mode().Perm(), target.Name)
		entries, err := os.ReadDir(filepath.Dir(file))
		require.NoError(t, err)
		assert.Len(t, entries, 1, "no temporary file left behind in %s", target.Name)
	}
}

func TestApplyDialTimeout(t *testing.T) {
	t.Parallel()
	c := newContainerd(t)
	c.DialTimeout = 1500 * time.Millisecond
	mustApply(t, c, dockerIO)
	_, parsed, _ := readHosts(t, filepath.Join(c.HostsDir, "docker.io", "hosts.toml"))
	assert.Equal(t, "1.5s", parsed.Host[testMirror].DialTimeout)

	// Zero leaves containerd's default.
	c = newContainerd(t)
	c.DialTimeout = 0
	mustApply(t, c, dockerIO)
	raw, _, _ := readHosts(t, filepath.Join(c.HostsDir, "docker.io", "hosts.toml"))
	assert.NotContains(t, string(raw), "dial_timeout")
}

func TestApplyIsIdempotent(t *testing.T) {
	t.Parallel()
	c := newContainerd(t)
	file := filepath.Join(c.HostsDir, "docker.io", "hosts.toml")
	mustApply(t, c, dockerIO)
	first, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, "unchanged "+file, mustApply(t, c, dockerIO))
	second, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, first, second)
	assert.NoFileExists(t, file+".lifeboat-backup", "lifeboat's own file is never backed up")

	// A new mirror rewrites lifeboat's file in place.
	c.Mirror = "http://127.0.0.1:6000"
	assert.Equal(t, "updated "+file, mustApply(t, c, dockerIO))
	_, _, order := readHosts(t, file)
	assert.Equal(t, []string{"http://127.0.0.1:6000"}, order)
	assert.NoFileExists(t, file+".lifeboat-backup")
}

func TestRemoveOfAFreshFile(t *testing.T) {
	t.Parallel()
	c := newContainerd(t)
	mustApply(t, c, dockerIO)
	mustApply(t, c, ghcrIO)
	// ghcr.io's directory holds something else too: it stays.
	other := filepath.Join(c.HostsDir, "ghcr.io", "ca.crt")
	require.NoError(t, os.WriteFile(other, []byte("x"), 0o644))

	assert.Equal(t, "removed "+filepath.Join(c.HostsDir, "docker.io", "hosts.toml")+" and its directory", mustRemove(t, c, dockerIO))
	assert.Equal(t, "removed "+filepath.Join(c.HostsDir, "ghcr.io", "hosts.toml"), mustRemove(t, c, ghcrIO))
	assert.Equal(t, "nothing to remove at "+filepath.Join(c.HostsDir, "quay.io", "hosts.toml"), mustRemove(t, c, quayIO))
	assert.NoDirExists(t, filepath.Join(c.HostsDir, "docker.io"))
	assert.NoFileExists(t, filepath.Join(c.HostsDir, "ghcr.io", "hosts.toml"))
	assert.FileExists(t, other)
	assert.DirExists(t, c.HostsDir)

	// A directory that existed before lifeboat wrote into it is kept.
	require.NoError(t, os.Remove(other))
	mustApply(t, c, ghcrIO)
	mustRemove(t, c, ghcrIO)
	assert.DirExists(t, filepath.Join(c.HostsDir, "ghcr.io"))
}

func TestApplyNeverOverwritesABackup(t *testing.T) {
	t.Parallel()
	c := newContainerd(t)
	file := filepath.Join(c.HostsDir, "docker.io", "hosts.toml")
	require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
	require.NoError(t, os.WriteFile(file, []byte(teamHosts), 0o644))
	mustApply(t, c, dockerIO)
	// Someone replaces lifeboat's merged file by hand.
	require.NoError(t, os.WriteFile(file, []byte("server = \"https://other\"\n"), 0o644))

	c.Force = true
	_, err := c.Apply(dockerIO)
	require.Error(t, err)
	assert.True(t, strings.HasSuffix(err.Error(), "was not written by lifeboat, and "+file+".lifeboat-backup (from an earlier run) exists: move one of them away"), err)
	saved, err := os.ReadFile(file + ".lifeboat-backup")
	require.NoError(t, err)
	assert.Equal(t, teamHosts, string(saved))
}

func TestApplyAndRemoveRefuseANameThatIsNotAHost(t *testing.T) {
	t.Parallel()
	c := newContainerd(t)
	for _, name := range []string{"", "..", "../../etc", "docker.io/library"} {
		_, err := c.Apply(Target{Name: name, Server: "https://x"})
		assert.Error(t, err, name)
		_, err = c.Remove(Target{Name: name, Server: "https://x"})
		assert.Error(t, err, name)
	}
	entries, err := os.ReadDir(c.HostsDir)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing written")
}

func TestCheckShadowing(t *testing.T) {
	t.Parallel()
	c := newContainerd(t)
	local := Target{Name: "localhost:5001", Server: "http://localhost:5001"}
	assert.Empty(t, c.CheckShadowing(local), "no localhost_5001_ yet")
	require.NoError(t, os.Mkdir(filepath.Join(c.HostsDir, "localhost_5001_"), 0o755))
	assert.Equal(t, []string{"containerd reads " + filepath.Join(c.HostsDir, "localhost_5001_") + " before " + filepath.Join(c.HostsDir, "localhost:5001") +
		", so the file written for localhost:5001 is ignored while it exists"}, c.CheckShadowing(local))
	assert.Empty(t, c.CheckShadowing(dockerIO), "a name without a port has no other directory")
}
