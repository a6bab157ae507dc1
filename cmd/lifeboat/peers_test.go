package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// peerSettingExamples are the cluster tier's rows in settingExamples.
func peerSettingExamples() map[string]settingExample {
	cluster := []string{"--peer-listen", "127.0.0.1:7101", "--peer-token-file", "/etc/lifeboat/token"}
	return map[string]settingExample{
		"peer-listen": {value: "127.0.0.1:7101", args: []string{"--peers", "127.0.0.1:7101", "--peer-token-file", "/t"},
			get: func(c serveConfig) any { return c.PeerListen }, want: "127.0.0.1:7101"},
		"peers": {value: "127.0.0.1:7101,127.0.0.1:7102", args: cluster,
			get: func(c serveConfig) any { return c.Peers }, want: []string{"127.0.0.1:7101", "127.0.0.1:7102"}},
		"peer-service":    {value: "lifeboat/lifeboat-peers", args: cluster, get: func(c serveConfig) any { return c.PeerService }, want: "lifeboat/lifeboat-peers"},
		"node-name":       {value: "node-a", get: func(c serveConfig) any { return c.NodeName }, want: "node-a"},
		"peer-replicas":   {value: "3", get: func(c serveConfig) any { return c.PeerReplicas }, want: 3},
		"peer-token-file": {value: "/etc/t", get: func(c serveConfig) any { return c.PeerTokenFile }, want: "/etc/t"},
	}
}

// The cluster tier's settings are checked together.
func TestPeerSettingsRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--peers", "127.0.0.1:7101"}, "need --peer-listen"},
		{[]string{"--peer-listen", "127.0.0.1:7101", "--peers", "127.0.0.1:7101"}, "needs --peer-token-file"},
		{[]string{"--peer-listen", "127.0.0.1:7101", "--peer-token-file", "/t"}, "needs --peers or --peer-service"},
		{[]string{"--peer-listen", "127.0.0.1:7101", "--peer-token-file", "/t", "--peers", "127.0.0.1:7102"}, "does not list --peer-listen"},
		{[]string{"--peer-listen", "127.0.0.1:7101", "--peer-token-file", "/t", "--peers", "127.0.0.1:7101", "--peer-service", "x"}, "choose one"},
		{[]string{"--peers", "nohost"}, "missing port"},
		{[]string{"--peer-replicas", "0"}, "at least 1"},
		{[]string{"--peer-listen", "127.0.0.1:5000", "--peer-token-file", "/t", "--peers", "127.0.0.1:5000"}, "5000"},
	} {
		_, err := loadServeConfig(tc.args, &bytes.Buffer{})
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.want, "%v", tc.args)
	}
}
