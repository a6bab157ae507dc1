package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// crioRun runs `lifeboat configure-crio args...` through run() and returns
// the exit code, stdout and stderr.
func crioRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), append([]string{"configure-crio"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// What the drop-in holds, merges and warns about is tested in nodeconfig;
// here, the command's lines, flags and exit codes.
func TestConfigureCRIOWritesRerunsAndRemoves(t *testing.T) {
	t.Parallel()
	confDir := filepath.Join(t.TempDir(), "registries.conf.d")
	file := filepath.Join(confDir, "50-lifeboat.conf")
	// --reload=false: a test never signals a crio that runs here.
	args := []string{"--conf-dir", confDir, "--registries-conf", "", "--registries", "docker.io,localhost:5001=http://localhost:5001", "--reload=false"}

	code, stdout, stderr := crioRun(t, args...)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "wrote "+file+"\n", stdout)
	assert.Empty(t, stderr)
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Contains(t, string(raw), `location = "127.0.0.1:5000/docker.io"`)
	assert.Contains(t, string(raw), `location = "127.0.0.1:5000/localhost_5001"`)

	code, stdout, stderr = crioRun(t, args...)
	require.Equal(t, 0, code)
	assert.Equal(t, "unchanged "+file+"\n", stdout)
	assert.Empty(t, stderr)

	code, stdout, _ = crioRun(t, append(args, "--remove")...)
	require.Equal(t, 0, code)
	assert.Equal(t, "removed "+file+" and its directory\n", stdout)
}

func TestConfigureCRIOMergesAndWarns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	require.NoError(t, os.WriteFile(conf, []byte("[[registry]]\nlocation = \"docker.io\"\nblocked = true\n"), 0o644))
	code, stdout, stderr := crioRun(t, "--conf-dir", filepath.Join(dir, "registries.conf.d"), "--registries-conf", conf, "--registries", "docker.io", "--reload=false")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "docker.io: merged with its [[registry]] in "+conf+"\nwrote "+filepath.Join(dir, "registries.conf.d", "50-lifeboat.conf")+"\n", stdout)
	assert.Equal(t, "lifeboat configure-crio: warning: docker.io is blocked (blocked = true, from "+conf+"): CRI-O refuses its images, through lifeboat or not\n", stderr)

	// A later drop-in for the same registry: refused, one line, exit 1.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "registries.conf.d", "99-team.conf"), []byte("[[registry]]\nlocation = \"docker.io\"\n"), 0o644))
	code, stdout, stderr = crioRun(t, "--conf-dir", filepath.Join(dir, "registries.conf.d"), "--registries-conf", conf, "--registries", "docker.io", "--reload=false")
	assert.Equal(t, 1, code)
	assert.Empty(t, stdout)
	assert.Regexp(t, `^lifeboat configure-crio: .*99-team.conf, read after 50-lifeboat.conf, has its own \[\[registry\]\] for docker.io`, stderr)
	assert.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
}

// --host-root and --only-if-present: what the chart's runtime: auto runs
// on every node.
func TestConfigureCRIOOnlyWhereCRIOIs(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	args := []string{"--host-root", root, "--only-if-present", "/run/crio/crio.sock,/etc/crio", "--reload=false"}
	code, stdout, stderr := crioRun(t, args...)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "CRI-O is not on this node (none of /run/crio/crio.sock, /etc/crio exists): nothing to do\n", stdout)
	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing created on a node without CRI-O")

	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc", "crio"), 0o755))
	code, stdout, stderr = crioRun(t, args...)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "wrote /etc/containers/registries.conf.d/50-lifeboat.conf\n", stdout, "host paths in what it says")
	assert.FileExists(t, filepath.Join(root, "etc", "containers", "registries.conf.d", "50-lifeboat.conf"))

	// --remove runs wherever it is asked to: it only takes away lifeboat's.
	require.NoError(t, os.RemoveAll(filepath.Join(root, "etc", "crio")))
	code, stdout, _ = crioRun(t, append(args, "--remove")...)
	require.Equal(t, 0, code)
	assert.Equal(t, "removed /etc/containers/registries.conf.d/50-lifeboat.conf and its directory\n", stdout)

	// The same for configure-containerd.
	code, stdout, stderr = configureRun(t, "--host-root", root, "--only-if-present", "/run/containerd/containerd.sock", "--registries", "docker.io")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "containerd is not on this node (none of /run/containerd/containerd.sock exists): nothing to do\n", stdout)
	require.NoError(t, os.MkdirAll(filepath.Join(root, "run", "containerd"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "run", "containerd", "containerd.sock"), nil, 0o600))
	code, stdout, stderr = configureRun(t, "--host-root", root, "--only-if-present", "/run/containerd/containerd.sock", "--registries", "docker.io")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "docker.io: wrote "+filepath.Join(root, "etc/containerd/certs.d/docker.io/hosts.toml")+"\n", stdout)
	assert.Contains(t, stderr, "containerd config "+filepath.Join(root, "etc/containerd/config.toml")+" does not exist",
		"the config is read under the root, and checked against the host path")
	assert.Contains(t, stderr, `config_path = "/etc/containerd/certs.d"`)
}

func TestConfigureCRIOBadInput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--mirror", "127.0.0.1:5000"}, `--mirror "127.0.0.1:5000": `},
		{[]string{"--registries", "Registry.Example.com"}, "cannot hold upper case"},
		{[]string{"--registries", "docker.io/library"}, "must not contain '/'"},
		{[]string{"--conf-dir", ""}, "--conf-dir must not be empty"},
		{[]string{"--reload=perhaps"}, "invalid boolean value"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			code, stdout, stderr := crioRun(t, append([]string{"--conf-dir", dir, "--registries-conf", ""}, tc.args...)...)
			assert.Equal(t, 1, code)
			assert.Empty(t, stdout)
			assert.True(t, strings.HasPrefix(stderr, "lifeboat configure-crio: "), stderr)
			assert.Contains(t, stderr, tc.want)
			assert.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Empty(t, entries, "nothing written")
		})
	}
}

func TestConfigureCRIOHelpAndEnvironment(t *testing.T) {
	// Not parallel: sets environment variables.
	code, stdout, stderr := crioRun(t, "--help")
	assert.Equal(t, 0, code)
	assert.Empty(t, stderr)
	for _, want := range []string{"Usage: lifeboat configure-crio", "50-lifeboat.conf", "localhost_5001", "auto_reload_registries",
		"-conf-dir", "LIFEBOAT_CONF_DIR", "-host-root", "-only-if-present", "docker.io,ghcr.io,quay.io"} {
		assert.Contains(t, stdout, want)
	}
	code, stdout, _ = run2(t, "--help")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "lifeboat configure-crio [flags]")

	confDir := t.TempDir()
	t.Setenv("LIFEBOAT_CONF_DIR", confDir)
	t.Setenv("LIFEBOAT_REGISTRIES_CONF", "")
	t.Setenv("LIFEBOAT_MIRROR", "http://127.0.0.1:7000")
	t.Setenv("LIFEBOAT_RELOAD", "false")
	code, _, stderr = crioRun(t, "--mirror", "http://127.0.0.1:7001", "--registries", "docker.io")
	require.Equal(t, 0, code, stderr)
	raw, err := os.ReadFile(filepath.Join(confDir, "50-lifeboat.conf"))
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"127.0.0.1:7001/docker.io"`, "the flag beats the environment")
}

// run2 runs lifeboat itself with args.
func run2(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestConfigureCRIOReloadWithoutCRIOWarns(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	require.NoError(t, reportReload(&stdout, &stderr, t.TempDir()))
	assert.Empty(t, stdout.String())
	assert.True(t, strings.HasPrefix(stderr.String(), "lifeboat configure-crio: warning: no crio process found in "), stderr.String())
	assert.True(t, strings.HasSuffix(stderr.String(), ": CRI-O reads the change when it restarts, "+
		"or on systemctl reload crio; with auto_reload_registries = true in crio.conf's [crio.image] it reads it at once\n"), stderr.String())
	assert.Error(t, reportReload(&stdout, &stderr, filepath.Join(t.TempDir(), "missing")), "an unreadable proc is an error")
}
