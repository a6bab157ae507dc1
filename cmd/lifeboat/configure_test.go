package main

import (
	"bytes"
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

// configureRun runs `lifeboat configure-containerd args...` through run()
// and returns the exit code, stdout and stderr.
func configureRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), append([]string{"configure-containerd"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// mustConfigure runs configure-containerd on hostsDir without checking a
// containerd config; it must succeed without warnings.
func mustConfigure(t *testing.T, hostsDir string, args ...string) string {
	t.Helper()
	code, stdout, stderr := configureRun(t, append([]string{"--hosts-dir", hostsDir, "--containerd-config", ""}, args...)...)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	assert.Empty(t, stderr)
	return stdout
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

func TestConfigureWritesHostsTOML(t *testing.T) {
	t.Parallel()
	hostsDir := filepath.Join(t.TempDir(), "certs.d") // created too
	stdout := mustConfigure(t, hostsDir, "--registries", "docker.io,ghcr.io,registry.example.com,localhost:5001=http://localhost:5001")
	assert.Equal(t, "docker.io: wrote "+filepath.Join(hostsDir, "docker.io", "hosts.toml")+"\n"+
		"ghcr.io: wrote "+filepath.Join(hostsDir, "ghcr.io", "hosts.toml")+"\n"+
		"registry.example.com: wrote "+filepath.Join(hostsDir, "registry.example.com", "hosts.toml")+"\n"+
		"localhost:5001: wrote "+filepath.Join(hostsDir, "localhost:5001", "hosts.toml")+"\n", stdout)

	for registry, server := range map[string]string{
		"docker.io": "https://registry-1.docker.io", "ghcr.io": "https://ghcr.io",
		"registry.example.com": "https://registry.example.com", "localhost:5001": "http://localhost:5001",
	} {
		file := filepath.Join(hostsDir, registry, "hosts.toml")
		raw, parsed, order := readHosts(t, file)
		assert.True(t, strings.HasPrefix(string(raw), "# Written by lifeboat configure-containerd;"), registry)
		assert.Equal(t, server, parsed.Server, registry)
		assert.Equal(t, []string{testMirror}, order, registry)
		assert.Equal(t, []string{"pull", "resolve"}, parsed.Host[testMirror].Capabilities, registry)
		d, err := time.ParseDuration(parsed.Host[testMirror].DialTimeout)
		require.NoError(t, err, "containerd 2.x ignores the whole file if dial_timeout does not parse")
		assert.Equal(t, time.Second, d)

		fi, err := os.Stat(file)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm(), registry)
		di, err := os.Stat(filepath.Dir(file))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o755), di.Mode().Perm(), registry)
		entries, err := os.ReadDir(filepath.Dir(file))
		require.NoError(t, err)
		assert.Len(t, entries, 1, "no temporary file left behind in %s", registry)
	}
}

func TestConfigureDefaultRegistriesAndDialTimeout(t *testing.T) {
	t.Parallel()
	hostsDir := t.TempDir()
	mustConfigure(t, hostsDir, "--mirror", "http://127.0.0.1:5555/", "--dial-timeout", "1500ms")
	for _, u := range defaultUpstreams {
		_, parsed, order := readHosts(t, filepath.Join(hostsDir, u.Name, "hosts.toml"))
		assert.Equal(t, u.URL, parsed.Server, u.Name)
		assert.Equal(t, []string{"http://127.0.0.1:5555"}, order, "trailing slash dropped")
		assert.Equal(t, "1.5s", parsed.Host["http://127.0.0.1:5555"].DialTimeout)
	}

	// --dial-timeout 0 leaves containerd's default.
	other := t.TempDir()
	mustConfigure(t, other, "--registries", "docker.io", "--dial-timeout", "0")
	raw, _, _ := readHosts(t, filepath.Join(other, "docker.io", "hosts.toml"))
	assert.NotContains(t, string(raw), "dial_timeout")
}

func TestConfigureIsIdempotent(t *testing.T) {
	t.Parallel()
	hostsDir := t.TempDir()
	file := filepath.Join(hostsDir, "docker.io", "hosts.toml")
	mustConfigure(t, hostsDir, "--registries", "docker.io")
	first, err := os.ReadFile(file)
	require.NoError(t, err)
	stdout := mustConfigure(t, hostsDir, "--registries", "docker.io")
	assert.Equal(t, "docker.io: unchanged "+file+"\n", stdout)
	second, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, first, second)
	assert.NoFileExists(t, file+".lifeboat-backup", "lifeboat's own file is never backed up")

	// A new mirror rewrites lifeboat's file in place.
	stdout = mustConfigure(t, hostsDir, "--registries", "docker.io", "--mirror", "http://127.0.0.1:6000")
	assert.Equal(t, "docker.io: updated "+file+"\n", stdout)
	_, _, order := readHosts(t, file)
	assert.Equal(t, []string{"http://127.0.0.1:6000"}, order)
	assert.NoFileExists(t, file+".lifeboat-backup")
}

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

func TestConfigureMergesAnExistingFile(t *testing.T) {
	t.Parallel()
	hostsDir := t.TempDir()
	file := filepath.Join(hostsDir, "docker.io", "hosts.toml")
	backup := file + ".lifeboat-backup"
	require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
	require.NoError(t, os.WriteFile(file, []byte(teamHosts), 0o640))

	stdout := mustConfigure(t, hostsDir, "--registries", "docker.io")
	assert.Equal(t, "docker.io: merged with the existing hosts of "+file+", backup at "+backup+"\n", stdout)

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
	stdout = mustConfigure(t, hostsDir, "--registries", "docker.io")
	assert.Equal(t, "docker.io: unchanged "+file+"\n", stdout)
	again, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, raw, again)
	matches, err := filepath.Glob(filepath.Join(filepath.Dir(file), "*"))
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{file, backup}, matches)

	// --remove restores the original, byte for byte, mode included.
	stdout = mustConfigure(t, hostsDir, "--registries", "docker.io", "--remove")
	assert.Equal(t, "docker.io: restored "+file+" from "+backup+"\n", stdout)
	restored, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, teamHosts, string(restored))
	fi, err = os.Stat(file)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
	assert.NoFileExists(t, backup)

	// Removing again touches nothing that is not lifeboat's.
	stdout = mustConfigure(t, hostsDir, "--registries", "docker.io", "--remove")
	assert.Equal(t, "docker.io: left "+file+" alone: lifeboat did not write it\n", stdout)
}

func TestConfigureMergeReplacesTheTeamsOwnEntryForLifeboat(t *testing.T) {
	t.Parallel()
	hostsDir := t.TempDir()
	file := filepath.Join(hostsDir, "ghcr.io", "hosts.toml")
	require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
	// Written by hand from the README, before configure-containerd existed.
	require.NoError(t, os.WriteFile(file, []byte(`server = "https://ghcr.io"

[host."http://127.0.0.1:5000/"]
  capabilities = ["pull", "resolve"]

[host."https://ghcr-mirror.internal"]
  capabilities = ["pull", "resolve"]
`), 0o644))
	mustConfigure(t, hostsDir, "--registries", "ghcr.io")
	_, parsed, order := readHosts(t, file)
	assert.Equal(t, []string{testMirror, "https://ghcr-mirror.internal"}, order)
	assert.Equal(t, "https://ghcr.io", parsed.Server)
	assert.Equal(t, "1s", parsed.Host[testMirror].DialTimeout)
}

func TestConfigureMergeAddsAServerWhenTheFileHasNone(t *testing.T) {
	t.Parallel()
	hostsDir := t.TempDir()
	file := filepath.Join(hostsDir, "quay.io", "hosts.toml")
	require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
	require.NoError(t, os.WriteFile(file, []byte("[host.\"https://quay-mirror.internal\"]\n  capabilities = [\"pull\"]"), 0o644))
	mustConfigure(t, hostsDir, "--registries", "quay.io")
	_, parsed, order := readHosts(t, file)
	assert.Equal(t, []string{testMirror, "https://quay-mirror.internal"}, order)
	assert.Equal(t, "https://quay.io", parsed.Server)
}

func TestConfigureRemoveOfAFreshFile(t *testing.T) {
	t.Parallel()
	hostsDir := t.TempDir()
	mustConfigure(t, hostsDir, "--registries", "docker.io,ghcr.io")
	// ghcr.io's directory holds something else too: it stays.
	other := filepath.Join(hostsDir, "ghcr.io", "ca.crt")
	require.NoError(t, os.WriteFile(other, []byte("x"), 0o644))

	stdout := mustConfigure(t, hostsDir, "--registries", "docker.io,ghcr.io,quay.io", "--remove")
	assert.Equal(t, "docker.io: removed "+filepath.Join(hostsDir, "docker.io", "hosts.toml")+" and its directory\n"+
		"ghcr.io: removed "+filepath.Join(hostsDir, "ghcr.io", "hosts.toml")+"\n"+
		"quay.io: nothing to remove at "+filepath.Join(hostsDir, "quay.io", "hosts.toml")+"\n", stdout)
	assert.NoDirExists(t, filepath.Join(hostsDir, "docker.io"))
	assert.NoFileExists(t, filepath.Join(hostsDir, "ghcr.io", "hosts.toml"))
	assert.FileExists(t, other)
	assert.DirExists(t, hostsDir)

	// A directory that existed before lifeboat wrote into it is kept.
	require.NoError(t, os.Remove(other))
	mustConfigure(t, hostsDir, "--registries", "ghcr.io")
	mustConfigure(t, hostsDir, "--registries", "ghcr.io", "--remove")
	assert.DirExists(t, filepath.Join(hostsDir, "ghcr.io"))
}

func TestConfigureRefusesWhatItCannotMergeUnlessForced(t *testing.T) {
	t.Parallel()
	for name, content := range map[string]string{
		"invalid TOML": "server = \"https://docker.io\"\n[host.\"x\"\n",
		"dotted hosts": "server = \"https://docker.io\"\nhost.\"https://m.internal\".capabilities = [\"pull\"]\n",
		"inline hosts": "host = { \"https://m.internal\" = { capabilities = [\"pull\"] } }\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			hostsDir := t.TempDir()
			file := filepath.Join(hostsDir, "docker.io", "hosts.toml")
			require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
			require.NoError(t, os.WriteFile(file, []byte(content), 0o644))

			code, stdout, stderr := configureRun(t, "--hosts-dir", hostsDir, "--containerd-config", "", "--registries", "docker.io")
			assert.Equal(t, 1, code)
			assert.Empty(t, stdout)
			assert.Regexp(t, `^lifeboat configure-containerd: docker.io: cannot merge with the existing .*hosts.toml: .*; fix it, or rerun with --force to replace it \(it is backed up first\)\n$`, stderr)
			assert.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
			got, err := os.ReadFile(file)
			require.NoError(t, err)
			assert.Equal(t, content, string(got), "untouched")
			assert.NoFileExists(t, file+".lifeboat-backup")

			stdout = mustConfigure(t, hostsDir, "--registries", "docker.io", "--force")
			assert.Contains(t, stdout, "docker.io: replaced "+file+", backup at "+file+".lifeboat-backup")
			_, parsed, order := readHosts(t, file)
			assert.Equal(t, []string{testMirror}, order)
			assert.Equal(t, "https://registry-1.docker.io", parsed.Server)
			assert.Equal(t, "docker.io: unchanged "+file+"\n", mustConfigure(t, hostsDir, "--registries", "docker.io", "--force"))

			mustConfigure(t, hostsDir, "--registries", "docker.io", "--remove")
			got, err = os.ReadFile(file)
			require.NoError(t, err)
			assert.Equal(t, content, string(got), "restored")
		})
	}
}

func TestConfigureNeverOverwritesABackup(t *testing.T) {
	t.Parallel()
	hostsDir := t.TempDir()
	file := filepath.Join(hostsDir, "docker.io", "hosts.toml")
	require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
	require.NoError(t, os.WriteFile(file, []byte(teamHosts), 0o644))
	mustConfigure(t, hostsDir, "--registries", "docker.io")
	// Someone replaces lifeboat's merged file by hand.
	require.NoError(t, os.WriteFile(file, []byte("server = \"https://other\"\n"), 0o644))

	code, _, stderr := configureRun(t, "--hosts-dir", hostsDir, "--containerd-config", "", "--registries", "docker.io", "--force")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "was not written by lifeboat, and "+file+".lifeboat-backup (from an earlier run) exists: move one of them away\n")
	saved, err := os.ReadFile(file + ".lifeboat-backup")
	require.NoError(t, err)
	assert.Equal(t, teamHosts, string(saved))
}

func TestConfigureWarnsAboutContainerdsConfigPath(t *testing.T) {
	t.Parallel()
	hostsDir := "/etc/containerd/certs.d"
	for _, tc := range []struct {
		name, config string
		want         []string // substrings, one warning each; none if empty
	}{
		{name: "1.x set", config: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d/\"\n"},
		{name: "1.x unset", config: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"overlayfs\"\n",
			want: []string{`config_path is not set in [plugins."io.containerd.grpc.v1.cri".registry]`}},
		{name: "1.x elsewhere", config: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/docker/certs.d\"\n",
			want: []string{`config_path is "/etc/docker/certs.d", not --hosts-dir "/etc/containerd/certs.d"`}},
		{name: "1.x format version 1", config: "[plugins.cri.registry]\n  config_path = \"/etc/containerd/certs.d\"\n"},
		{name: "1.x list", config: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d:/etc/docker/certs.d\"\n",
			want: []string{"is a colon-separated list: containerd 2.x (which also reads this version of the config) pulls through its transfer service"}},
		{name: "2.x set", config: "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"},
		{name: "2.x unset", config: "version = 3\n[plugins.\"io.containerd.cri.v1.images\"]\n  snapshotter = \"overlayfs\"\n",
			want: []string{`config_path is not set in [plugins."io.containerd.cri.v1.images".registry], so containerd 2.x uses "/etc/containerd/certs.d:/etc/docker/certs.d"`}},
		{name: "2.x in 1.x's place", config: "version = 3\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
			want: []string{"config_path is not set in [plugins.\"io.containerd.cri.v1.images\".registry]"}},
		{name: "2.x list", config: "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/etc/containerd/certs.d:/etc/docker/certs.d\"\n",
			want: []string{`config_path "/etc/containerd/certs.d:/etc/docker/certs.d" is a colon-separated list: containerd 2.x pulls through its transfer service, which takes a single directory, so it ignores every hosts.toml`}},
		{name: "2.x list elsewhere", config: "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/a:/b\"\n",
			want: []string{`config_path is "/a:/b", not --hosts-dir`, "colon-separated list"}},
		{name: "2.x list with local pulls", config: "version = 3\n[plugins.\"io.containerd.cri.v1.images\"]\n  use_local_image_pull = true\n  [plugins.\"io.containerd.cri.v1.images\".registry]\n    config_path = \"/etc/containerd/certs.d:/etc/docker/certs.d\"\n"},
		{name: "not TOML", config: "version = \n", want: []string{"cannot check containerd's config_path"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "config.toml")
			require.NoError(t, os.WriteFile(path, []byte(tc.config), 0o644))
			warnings := checkContainerdConfig(path, hostsDir)
			require.Len(t, warnings, len(tc.want), "%q", warnings)
			for i, w := range tc.want {
				assert.Contains(t, warnings[i], w)
				assert.NotContains(t, warnings[i], "\n")
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		warnings := checkContainerdConfig(filepath.Join(t.TempDir(), "config.toml"), hostsDir)
		require.Len(t, warnings, 1)
		assert.Contains(t, warnings[0], "does not exist, so containerd's defaults apply")
	})

	t.Run("through run: warnings do not fail", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		path := filepath.Join(dir, "config.toml")
		require.NoError(t, os.WriteFile(path, []byte("version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/x:/y\"\n"), 0o644))
		code, stdout, stderr := configureRun(t, "--hosts-dir", filepath.Join(dir, "certs.d"), "--containerd-config", path, "--registries", "docker.io")
		assert.Equal(t, 0, code)
		assert.Contains(t, stdout, "docker.io: wrote ")
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		require.Len(t, lines, 2, stderr)
		for _, l := range lines {
			assert.True(t, strings.HasPrefix(l, "lifeboat configure-containerd: warning: "), l)
		}
	})
}

func TestConfigureWarnsAboutAShadowingPortDirectory(t *testing.T) {
	t.Parallel()
	hostsDir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(hostsDir, "localhost_5001_"), 0o755))
	code, _, stderr := configureRun(t, "--hosts-dir", hostsDir, "--containerd-config", "", "--registries", "localhost:5001=http://localhost:5001")
	assert.Equal(t, 0, code)
	assert.Contains(t, stderr, "warning: containerd reads "+filepath.Join(hostsDir, "localhost_5001_")+" before "+filepath.Join(hostsDir, "localhost:5001"))
}

func TestConfigureBadInput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--mirror", "127.0.0.1:5000"}, `--mirror "127.0.0.1:5000": `},
		{[]string{"--mirror", "ftp://127.0.0.1:5000"}, "must be an http or https URL with a host"},
		{[]string{"--mirror", "http://"}, "must be an http or https URL with a host"},
		{[]string{"--mirror", "http://127.0.0.1:5000/v2"}, "must be scheme://host[:port] only"},
		{[]string{"--registries", "docker.io,,ghcr.io"}, `--registries "": empty registry name`},
		{[]string{"--registries", "=https://x"}, "empty registry name"},
		{[]string{"--registries", "docker.io/library"}, `registry name "docker.io/library" must not contain '/'`},
		{[]string{"--registries", "../../etc"}, "must not contain '/'"},
		{[]string{"--registries", ".."}, `registry name ".." is not a registry host`},
		{[]string{"--registries", "_default"}, "must be a registry host"},
		{[]string{"--registries", "bad name"}, "must be a registry host"},
		{[]string{"--registries", "docker.io,docker.io"}, "docker.io named twice"},
		{[]string{"--registries", "r.example=registry.example"}, `server "registry.example" must be an http or https URL`},
		{[]string{"--dial-timeout", "1"}, `invalid value "1" for flag -dial-timeout`},
		{[]string{"--dial-timeout", "-1s"}, "must not be negative"},
		{[]string{"--hosts-dir", ""}, "--hosts-dir must not be empty"},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			hostsDir := t.TempDir()
			args := append([]string{"--hosts-dir", hostsDir, "--containerd-config", ""}, tc.args...)
			code, stdout, stderr := configureRun(t, args...)
			assert.Equal(t, 1, code)
			assert.Empty(t, stdout)
			assert.True(t, strings.HasPrefix(stderr, "lifeboat configure-containerd: "), stderr)
			assert.Contains(t, stderr, tc.want)
			assert.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
			entries, err := os.ReadDir(hostsDir)
			require.NoError(t, err)
			assert.Empty(t, entries, "nothing written")
		})
	}
}

func TestConfigureHelp(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := configureRun(t, "--help")
	assert.Equal(t, 0, code)
	assert.Empty(t, stderr)
	for _, want := range []string{"Usage: lifeboat configure-containerd", "hosts.toml.lifeboat-backup", "--force", "--remove", "NAME=SERVER_URL",
		"-dial-timeout", "LIFEBOAT_HOSTS_DIR", "docker.io,ghcr.io,quay.io"} {
		assert.Contains(t, stdout, want)
	}
}

func TestConfigureFromEnvironment(t *testing.T) {
	// Not parallel: sets environment variables.
	hostsDir := t.TempDir()
	t.Setenv("LIFEBOAT_HOSTS_DIR", hostsDir)
	t.Setenv("LIFEBOAT_MIRROR", "http://127.0.0.1:7000")
	t.Setenv("LIFEBOAT_REGISTRIES", "docker.io, localhost:5001=http://localhost:5001")
	t.Setenv("LIFEBOAT_DIAL_TIMEOUT", "2s")
	t.Setenv("LIFEBOAT_CONTAINERD_CONFIG", "")
	code, stdout, stderr := configureRun(t, "--mirror", "http://127.0.0.1:7001")
	require.Equal(t, 0, code, stderr)
	assert.Empty(t, stderr)
	assert.Contains(t, stdout, "localhost:5001: wrote ")
	_, parsed, order := readHosts(t, filepath.Join(hostsDir, "docker.io", "hosts.toml"))
	assert.Equal(t, []string{"http://127.0.0.1:7001"}, order, "the flag beats the environment")
	assert.Equal(t, "2s", parsed.Host["http://127.0.0.1:7001"].DialTimeout)
	_, parsed, _ = readHosts(t, filepath.Join(hostsDir, "localhost:5001", "hosts.toml"))
	assert.Equal(t, "http://localhost:5001", parsed.Server)

	t.Setenv("LIFEBOAT_REMOVE", "true")
	code, stdout, _ = configureRun(t)
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "docker.io: removed ")

	t.Setenv("LIFEBOAT_REMOVE", "perhaps")
	code, _, stderr = configureRun(t)
	assert.Equal(t, 1, code)
	assert.Equal(t, "lifeboat configure-containerd: LIFEBOAT_REMOVE=\"perhaps\": parse error\n", stderr)
}
