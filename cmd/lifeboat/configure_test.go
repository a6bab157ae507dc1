package main

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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

// hostsFileTOML is what these tests read of a hosts.toml: the file logic
// itself is tested in nodeconfig.
type hostsFileTOML struct {
	Server string `toml:"server"`
	Host   map[string]struct {
		DialTimeout string `toml:"dial_timeout"`
	} `toml:"host"`
}

// readHosts returns the file, what it says, and its hosts' names (sorted:
// each file these tests read has one host, lifeboat).
func readHosts(t *testing.T, path string) ([]byte, hostsFileTOML, []string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	var parsed hostsFileTOML
	require.NoError(t, toml.Unmarshal(raw, &parsed), "%s:\n%s", path, raw)
	return raw, parsed, slices.Sorted(maps.Keys(parsed.Host))
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
		_, parsed, order := readHosts(t, filepath.Join(hostsDir, registry, "hosts.toml"))
		assert.Equal(t, server, parsed.Server, registry)
		assert.Equal(t, []string{testMirror}, order, registry)
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

// What a rerun and --remove do to the files is tested in nodeconfig; here,
// that each registry gets its line.
func TestConfigureRerunAndRemove(t *testing.T) {
	t.Parallel()
	hostsDir := t.TempDir()
	file := filepath.Join(hostsDir, "docker.io", "hosts.toml")
	mustConfigure(t, hostsDir, "--registries", "docker.io")
	stdout := mustConfigure(t, hostsDir, "--registries", "docker.io")
	assert.Equal(t, "docker.io: unchanged "+file+"\n", stdout)

	stdout = mustConfigure(t, hostsDir, "--registries", "docker.io,quay.io", "--remove")
	assert.Equal(t, "docker.io: removed "+file+" and its directory\n"+
		"quay.io: nothing to remove at "+filepath.Join(hostsDir, "quay.io", "hosts.toml")+"\n", stdout)
}

// What --force does to the files is tested in nodeconfig; here, that it
// reaches it, and that a refusal is one line and exit code 1.
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
			assert.Equal(t, "docker.io: replaced "+file+", backup at "+file+".lifeboat-backup\n", stdout)

			stdout = mustConfigure(t, hostsDir, "--registries", "docker.io", "--remove")
			assert.Equal(t, "docker.io: restored "+file+" from "+file+".lifeboat-backup\n", stdout)
		})
	}
}

func TestConfigureWarningsDoNotFail(t *testing.T) {
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

	// --remove does not check containerd's config.
	code, _, stderr = configureRun(t, "--hosts-dir", filepath.Join(dir, "certs.d"), "--containerd-config", path, "--registries", "docker.io", "--remove")
	assert.Equal(t, 0, code)
	assert.Empty(t, stderr)
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
