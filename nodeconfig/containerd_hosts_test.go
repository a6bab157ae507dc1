package nodeconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A team's own hosts.toml: two hosts with their keys, a header table,
// comments, a server of its own.
const teamHosts = `# Team registry settings: the internal mirror first.
server = "https://registry-1.docker.io"
capabilities = ["pull", "resolve"]

# the internal mirror
[host."https://mirror.internal:5000"]
  capabilities = ["pull", "resolve"]
  ca = "/etc/certs/internal-ca.pem"
  override_path = false

[host."https://mirror.internal:5000".header]
  x-team = "platform"

[host."https://backup.internal"]
  capabilities = ["pull"]
  skip_verify = true
`

// writeTeamFile puts content at <hostsDir>/<name>/hosts.toml, as someone
// other than lifeboat would, and returns its path.
func writeTeamFile(t *testing.T, c Containerd, name, content string, mode os.FileMode) string {
	t.Helper()
	file := filepath.Join(c.HostsDir, name, "hosts.toml")
	require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
	require.NoError(t, os.WriteFile(file, []byte(content), mode))
	return file
}

func TestApplyMergesAnExistingFile(t *testing.T) {
	t.Parallel()
	c := newContainerd(t)
	file := writeTeamFile(t, c, "docker.io", teamHosts, 0o640)
	backup := file + ".lifeboat-backup"

	assert.Equal(t, "merged with the existing hosts of "+file+", backup at "+backup, mustApply(t, c, dockerIO))

	saved, err := os.ReadFile(backup)
	require.NoError(t, err)
	assert.Equal(t, teamHosts, string(saved), "the backup is the original, byte for byte")
	fi, err := os.Stat(backup)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm(), "the backup keeps the original's mode")

	raw, parsed, order := readHosts(t, file)
	assert.Equal(t, []string{testMirror, "https://mirror.internal:5000", "https://backup.internal"}, order, "lifeboat first, then the team's hosts in their order")
	assert.Equal(t, "https://registry-1.docker.io", parsed.Server, "the team's server stays the fallback")
	assert.Equal(t, "1s", parsed.Host[testMirror].DialTimeout)
	assert.Equal(t, "/etc/certs/internal-ca.pem", parsed.Host["https://mirror.internal:5000"].CA)
	assert.Equal(t, map[string]string{"x-team": "platform"}, parsed.Host["https://mirror.internal:5000"].Header)
	assert.Equal(t, []string{"pull"}, parsed.Host["https://backup.internal"].Capabilities)
	require.NotNil(t, parsed.Host["https://backup.internal"].SkipVerify)
	assert.True(t, *parsed.Host["https://backup.internal"].SkipVerify)
	tables := teamHosts[strings.Index(teamHosts, "# the internal mirror"):]
	assert.True(t, strings.HasSuffix(string(raw), "\n\n"+tables), "the team's tables are kept as they were written:\n%s", raw)
	assert.Contains(t, string(raw), "# Team registry settings: the internal mirror first.\nserver = \"https://registry-1.docker.io\"\ncapabilities = [\"pull\", \"resolve\"]\n")

	// Idempotent: same bytes, no second backup.
	assert.Equal(t, "unchanged "+file, mustApply(t, c, dockerIO))
	again, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, raw, again)
	matches, err := filepath.Glob(filepath.Join(filepath.Dir(file), "*"))
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{file, backup}, matches)

	// Remove restores the original, byte for byte, mode included.
	assert.Equal(t, "restored "+file+" from "+backup, mustRemove(t, c, dockerIO))
	restored, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, teamHosts, string(restored))
	fi, err = os.Stat(file)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
	assert.NoFileExists(t, backup)

	// Removing again touches nothing that is not lifeboat's.
	assert.Equal(t, "left "+file+" alone: lifeboat did not write it", mustRemove(t, c, dockerIO))
}

func TestApplyMergeReplacesTheTeamsOwnEntryForLifeboat(t *testing.T) {
	t.Parallel()
	c := newContainerd(t)
	// Written by hand from the README, before configure-containerd existed.
	file := writeTeamFile(t, c, "ghcr.io", `server = "https://ghcr.io"

[host."http://127.0.0.1:5000/"]
  capabilities = ["pull", "resolve"]

[host."https://ghcr-mirror.internal"]
  capabilities = ["pull", "resolve"]
`, 0o644)
	mustApply(t, c, ghcrIO)
	_, parsed, order := readHosts(t, file)
	assert.Equal(t, []string{testMirror, "https://ghcr-mirror.internal"}, order)
	assert.Equal(t, "https://ghcr.io", parsed.Server)
	assert.Equal(t, "1s", parsed.Host[testMirror].DialTimeout)
}

func TestApplyMergeAddsAServerWhenTheFileHasNone(t *testing.T) {
	t.Parallel()
	c := newContainerd(t)
	file := writeTeamFile(t, c, "quay.io", "[host.\"https://quay-mirror.internal\"]\n  capabilities = [\"pull\"]", 0o644)
	mustApply(t, c, quayIO)
	_, parsed, order := readHosts(t, file)
	assert.Equal(t, []string{testMirror, "https://quay-mirror.internal"}, order)
	assert.Equal(t, "https://quay.io", parsed.Server)
}

// unmergeable are hosts.toml files lifeboat refuses to merge with.
var unmergeable = map[string]string{
	"invalid TOML": "server = \"https://docker.io\"\n[host.\"x\"\n",
	"dotted hosts": "server = \"https://docker.io\"\nhost.\"https://m.internal\".capabilities = [\"pull\"]\n",
	"inline hosts": "host = { \"https://m.internal\" = { capabilities = [\"pull\"] } }\n",
}

func TestApplyRefusesWhatItCannotMergeUnlessForced(t *testing.T) {
	t.Parallel()
	for name, content := range unmergeable {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := newContainerd(t)
			file := writeTeamFile(t, c, "docker.io", content, 0o644)

			_, err := c.Apply(dockerIO)
			require.Error(t, err)
			assert.Regexp(t, `^cannot merge with the existing .*hosts.toml: .*; fix it, or rerun with --force to replace it \(it is backed up first\)$`, err.Error())
			assert.NotContains(t, err.Error(), "\n", "one line")
			got, err := os.ReadFile(file)
			require.NoError(t, err)
			assert.Equal(t, content, string(got), "untouched")
			assert.NoFileExists(t, file+".lifeboat-backup")

			c.Force = true
			assert.Equal(t, "replaced "+file+", backup at "+file+".lifeboat-backup", mustApply(t, c, dockerIO))
			_, parsed, order := readHosts(t, file)
			assert.Equal(t, []string{testMirror}, order)
			assert.Equal(t, "https://registry-1.docker.io", parsed.Server)
			assert.Equal(t, "unchanged "+file, mustApply(t, c, dockerIO))

			c.Force = false
			mustRemove(t, c, dockerIO)
			got, err = os.ReadFile(file)
			require.NoError(t, err)
			assert.Equal(t, content, string(got), "restored")
		})
	}
}
