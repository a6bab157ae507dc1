package nodeconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const goodContainerdConfig = "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"@\"\n"

func TestCheckContainerd(t *testing.T) {
	t.Parallel()
	targets := []Target{{Name: "docker.io", Server: "https://registry-1.docker.io"}, {Name: "localhost:5001", Server: "http://localhost:5001"}}
	for _, tc := range []struct {
		name   string
		mangle func(t *testing.T, hostsDir, config string)
		want   map[string]Status // check -> status; the rest OK
		detail string            // in a failing finding
	}{
		{name: "good", mangle: func(*testing.T, string, string) {}},
		{name: "config elsewhere", mangle: func(t *testing.T, _, config string) {
			writeFile(t, config, "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/etc/docker/certs.d\"\n")
		}, want: map[string]Status{"containerd config": Fail}, detail: `config_path is "/etc/docker/certs.d"`},
		{name: "no config", mangle: func(t *testing.T, _, config string) { require.NoError(t, os.Remove(config)) },
			want: map[string]Status{"containerd config": Fail}, detail: "does not exist"},
		{name: "hosts missing", mangle: func(t *testing.T, hostsDir, _ string) {
			require.NoError(t, os.Remove(filepath.Join(hostsDir, "docker.io", "hosts.toml")))
		}, want: map[string]Status{"docker.io hosts.toml": Fail}, detail: "containerd pulls docker.io without lifeboat"},
		{name: "hosts not lifeboat's", mangle: func(t *testing.T, hostsDir, _ string) {
			writeFile(t, filepath.Join(hostsDir, "docker.io", "hosts.toml"), "server = \"https://registry-1.docker.io\"\n")
		}, want: map[string]Status{"docker.io hosts.toml": Fail}, detail: "was not written by lifeboat"},
		{name: "another mirror", mangle: func(t *testing.T, hostsDir, _ string) {
			writeFile(t, filepath.Join(hostsDir, "docker.io", "hosts.toml"), hostsHeader+"\nserver = \"https://registry-1.docker.io\"\n[host.\"http://127.0.0.1:6000\"]\n")
		}, want: map[string]Status{"docker.io hosts.toml": Fail}, detail: "does not name lifeboat (http://127.0.0.1:5000) as the first host"},
		{name: "shadowed", mangle: func(t *testing.T, hostsDir, _ string) {
			require.NoError(t, os.MkdirAll(filepath.Join(hostsDir, "localhost_5001_"), 0o755))
		}, want: map[string]Status{"localhost:5001 hosts.toml": Fail}, detail: "before"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			hostsDir, config := filepath.Join(dir, "certs.d"), filepath.Join(dir, "config.toml")
			writeFile(t, config, strings.ReplaceAll(goodContainerdConfig, "@", hostsDir))
			c := Containerd{HostsDir: hostsDir, Mirror: "http://127.0.0.1:5000"}
			for _, tg := range targets {
				_, err := c.Apply(tg)
				require.NoError(t, err)
			}
			tc.mangle(t, hostsDir, config)
			findings := c.CheckContainerd(config, "", targets)
			got := map[string]Status{}
			for _, f := range findings {
				if f.Status != OK {
					got[f.Check] = f.Status
					assert.Contains(t, f.String(), tc.detail)
					assert.Contains(t, f.String(), "fix: ")
				}
			}
			if tc.want == nil {
				tc.want = map[string]Status{}
			}
			assert.Equal(t, tc.want, got, "%v", findings)
			assert.Equal(t, len(tc.want) == 0, Healthy(findings))
		})
	}
}

func TestCheckCRIO(t *testing.T) {
	t.Parallel()
	targets := []Target{{Name: "docker.io", Server: "https://registry-1.docker.io"}}
	dir := t.TempDir()
	c := CRIO{ConfDir: dir, Mirror: "http://127.0.0.1:5000"}
	f := c.CheckCRIO(targets)
	require.Len(t, f, 1)
	assert.Equal(t, Fail, f[0].Status)
	assert.Contains(t, f[0].String(), "does not exist: CRI-O pulls without lifeboat")

	_, err := c.Apply(targets)
	require.NoError(t, err)
	f = c.CheckCRIO(targets)
	assert.True(t, Healthy(f), "%v", f)
	assert.Equal(t, "OK   docker.io mirror: 127.0.0.1:5000/docker.io first", f[1].String())

	f = c.CheckCRIO(append(targets, Target{Name: "quay.io", Server: "https://quay.io"}))
	assert.False(t, Healthy(f))
	assert.Contains(t, f[2].String(), "has no [[registry]] for quay.io")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}
