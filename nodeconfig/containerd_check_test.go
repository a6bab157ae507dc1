package nodeconfig

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckContainerdConfig(t *testing.T) {
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
			warnings := CheckContainerdConfig(path, hostsDir)
			require.Len(t, warnings, len(tc.want), "%q", warnings)
			for i, w := range tc.want {
				assert.Contains(t, warnings[i], w)
				assert.NotContains(t, warnings[i], "\n")
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		warnings := CheckContainerdConfig(filepath.Join(t.TempDir(), "config.toml"), hostsDir)
		require.Len(t, warnings, 1)
		assert.Contains(t, warnings[0], "does not exist, so containerd's defaults apply")
	})
}
