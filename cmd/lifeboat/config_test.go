package main

import (
	"bytes"
	"cmp"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConfigPrecedence(t *testing.T) {
	// Not parallel: sets environment variables.
	file := filepath.Join(t.TempDir(), "lifeboat.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`
listen: 127.0.0.1:6000
dataDir: /from/file
logLevel: debug
tagTTL: 30s
maxStaleness: 24h
breaker:
  failures: 5
timeouts:
  revalidate: 2s
upstreams:
  - name: docker.io
    url: https://registry-1.docker.io
    timeouts:
      dial: 1s
  - name: localhost:5001
    url: http://127.0.0.1:5001
    tagTTL: 0s
    serveStaleOnNotFound: true
    breaker:
      backoff: 10s
`), 0o644))
	t.Setenv("LIFEBOAT_DATA_DIR", "/from/env")
	t.Setenv("LIFEBOAT_LOG_LEVEL", "warn")
	cfg, err := loadServeConfig([]string{"--config", file, "--log-level", "error"}, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:6000", cfg.Listen, "file beats default")
	assert.Equal(t, "/from/env", cfg.DataDir, "env beats file")
	assert.Equal(t, "error", cfg.LogLevel, "flag beats env")
	assert.Equal(t, "127.0.0.1:5090", cfg.MetricsListen, "default when nothing sets it")

	ups := cfg.proxyUpstreams()
	require.Len(t, ups, 2)
	assert.Equal(t, time.Second, ups[0].Timeouts.Dial, "per-registry timeout")
	assert.Equal(t, 2*time.Second, ups[0].Timeouts.Revalidate, "top-level timeout inherited")
	assert.Equal(t, 30*time.Second, ups[0].TagTTL, "top-level tag TTL inherited")
	assert.Equal(t, time.Duration(0), ups[1].TagTTL, "per-registry tag TTL wins")
	assert.Equal(t, 24*time.Hour, ups[1].MaxStaleness)
	assert.False(t, ups[0].ServeStaleOnNotFound)
	assert.True(t, ups[1].ServeStaleOnNotFound)
	assert.Equal(t, 5, ups[1].Breaker.Failures, "breaker settings inherit field by field")
	assert.Equal(t, 10*time.Second, ups[1].Breaker.Backoff)
	assert.Equal(t, time.Duration(0), ups[0].Breaker.Backoff, "zero means the proxy's default")
}

func TestUpstreamFlagsReplaceDefaults(t *testing.T) {
	t.Setenv("LIFEBOAT_UPSTREAM", "")
	cfg, err := loadServeConfig(nil, &bytes.Buffer{})
	require.Error(t, err, "an empty LIFEBOAT_UPSTREAM is a mistake, not the default set")

	os.Unsetenv("LIFEBOAT_UPSTREAM")
	cfg, err = loadServeConfig(nil, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Len(t, cfg.Upstreams, len(defaultUpstreams))

	cfg, err = loadServeConfig([]string{"--upstream", "a.test=http://127.0.0.1:1", "--upstream", "b.test=https://b.test", "--default-registry", "b.test"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Len(t, cfg.Upstreams, 2)
	assert.Equal(t, "a.test", cfg.Upstreams[0].Name)
	assert.Equal(t, "https://b.test", cfg.Upstreams[1].URL)
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.yaml")
	require.NoError(t, os.WriteFile(typo, []byte("listn: 127.0.0.1:1\n"), 0o644))
	prefetchOther := filepath.Join(dir, "prefetch-other.yaml")
	require.NoError(t, os.WriteFile(prefetchOther, []byte("prefetch:\n  - ref: quay.io/prometheus/node-exporter:v1\nupstreams:\n  - {name: docker.io, url: https://registry-1.docker.io}\n"), 0o644))
	prefetchBad := filepath.Join(dir, "prefetch-bad.yaml")
	require.NoError(t, os.WriteFile(prefetchBad, []byte("prefetch:\n  - ref: \"Not A Reference\"\n"), 0o644))
	badDur := filepath.Join(dir, "dur.yaml")
	require.NoError(t, os.WriteFile(badDur, []byte("tagTTL: 30\n"), 0o644))
	for name, args := range map[string][]string{
		"unknown key":          {"--config", typo},
		"duration not string":  {"--config", badDur},
		"missing file":         {"--config", filepath.Join(dir, "nope.yaml")},
		"bad listen":           {"--listen", "nonsense"},
		"bad level":            {"--log-level", "loud"},
		"bad format":           {"--log-format", "xml"},
		"upstream not k=v":     {"--upstream", "docker.io"},
		"default not mirrored": {"--upstream", "a.test=http://x", "--default-registry", "docker.io"},
		"duplicate upstream":   {"--upstream", "a.test=http://x", "--upstream", "a.test=http://y", "--default-registry", "a.test"},
		"stray argument":       {"extra"},
		"bad tag ttl":          {"--tag-ttl", "soon"},
	} {
		_, err := loadServeConfig(args, &bytes.Buffer{})
		assert.Error(t, err, name)
	}
}

// TestListenersNeedTheirOwnAddress: two of serve's listeners on one
// address are refused at start, naming both.
func TestListenersNeedTheirOwnAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		args    []string
		clashes []string // the flags named in the error; none: accepted
	}{
		{"defaults", nil, nil},
		{"every port left to the kernel", []string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, nil},
		{"one port, two hosts", []string{"--metrics-listen", "10.0.0.1:7000", "--admin-listen", "127.0.0.1:7000"}, nil},
		{"metrics on the registry's address", []string{"--metrics-listen", "127.0.0.1:5000"}, []string{"--listen", "--metrics-listen"}},
		{"wildcard takes the port everywhere", []string{"--metrics-listen", "0.0.0.0:5000"}, []string{"--listen", "--metrics-listen"}},
		{"IPv6 wildcard", []string{"--metrics-listen", "[::]:7000", "--admin-listen", "127.0.0.1:7000"}, []string{"--metrics-listen", "--admin-listen"}},
		{"empty host", []string{"--listen", ":7000", "--admin-listen", "127.0.0.1:7000"}, []string{"--listen", "--admin-listen"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := loadServeConfig(tc.args, &bytes.Buffer{})
			if tc.clashes == nil {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), "share an address")
			for _, f := range tc.clashes {
				assert.Contains(t, err.Error(), f+" ")
			}
		})
	}
}

func TestCLIExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	assert.Equal(t, 2, run(t.Context(), nil, &out, &errb))
	assert.Equal(t, 2, run(t.Context(), []string{"frobnicate"}, &out, &errb))
	assert.Contains(t, errb.String(), `unknown command "frobnicate"`)
	assert.Equal(t, 0, run(t.Context(), []string{"version"}, &out, &errb))
	assert.Contains(t, out.String(), "lifeboat ")
	errb.Reset()
	assert.Equal(t, 0, run(t.Context(), []string{"serve", "--help"}, &out, &errb))
	assert.Contains(t, errb.String(), "LIFEBOAT_LISTEN")
	errb.Reset()
	assert.Equal(t, 1, run(t.Context(), []string{"serve", "--log-format", "xml"}, &out, &errb))
	assert.Contains(t, errb.String(), "--log-format")
}

// settingExample is a value of one setting, and what it sets.
type settingExample struct {
	value string   // as a flag or env var takes it
	yaml  string   // as the config file takes it, if not value
	args  []string // other flags the example needs to be valid
	get   func(serveConfig) any
	want  any
}

// settingExamples has an example of every setting of serve, by flag or
// (file-only settings) key.
func settingExamples(t *testing.T) map[string]settingExample {
	other := filepath.Join(t.TempDir(), "other.yaml")
	require.NoError(t, os.WriteFile(other, []byte("listen: 127.0.0.1:7009\n"), 0o644))
	dur := func(get func(serveConfig) time.Duration) func(serveConfig) any {
		return func(c serveConfig) any { return get(c) }
	}
	examples := map[string]settingExample{
		"config":            {value: other, get: func(c serveConfig) any { return c.Listen }, want: "127.0.0.1:7009"},
		"listen":            {value: "127.0.0.1:7001", get: func(c serveConfig) any { return c.Listen }, want: "127.0.0.1:7001"},
		"metrics-listen":    {value: "127.0.0.1:7002", get: func(c serveConfig) any { return c.MetricsListen }, want: "127.0.0.1:7002"},
		"admin-listen":      {value: "127.0.0.1:7003", get: func(c serveConfig) any { return c.AdminListen }, want: "127.0.0.1:7003"},
		"data-dir":          {value: "/var/lib/x", get: func(c serveConfig) any { return c.DataDir }, want: "/var/lib/x"},
		"default-registry":  {value: "ghcr.io", get: func(c serveConfig) any { return c.DefaultRegistry }, want: "ghcr.io"},
		"docker-config":     {value: "/etc/x/config.json", get: func(c serveConfig) any { return c.DockerConfig }, want: "/etc/x/config.json"},
		"log-level":         {value: "debug", get: func(c serveConfig) any { return c.LogLevel }, want: "debug"},
		"log-format":        {value: "json", get: func(c serveConfig) any { return c.LogFormat }, want: "json"},
		"tag-ttl":           {value: "90s", get: dur(func(c serveConfig) time.Duration { return c.TagTTL }), want: 90 * time.Second},
		"max-size":          {value: "2GiB", get: func(c serveConfig) any { return c.MaxSize }, want: int64(2 << 30)},
		"min-free-disk":     {value: "5GiB", get: func(c serveConfig) any { return c.MinFreeDisk }, want: diskFloor{Bytes: 5 << 30}},
		"containerd-socket": {value: "/run/c.sock", get: func(c serveConfig) any { return c.ContainerdSocket }, want: "/run/c.sock"},
		"image-credential-provider-config": {value: "/etc/kubernetes/cp.yaml", args: []string{"--image-credential-provider-bin-dir", "/bin"},
			get: func(c serveConfig) any { return c.ProviderConfig }, want: "/etc/kubernetes/cp.yaml"},
		"image-credential-provider-bin-dir": {value: "/opt/cp/bin", get: func(c serveConfig) any { return c.ProviderBinDir }, want: "/opt/cp/bin"},
		"credentialTimeout":                 {value: "3s", get: dur(func(c serveConfig) time.Duration { return c.CredentialTimeout }), want: 3 * time.Second},
		"privateContent":                    {value: "verify", get: func(c serveConfig) any { return c.PrivateContent }, want: proxy.PrivateVerify},
		"privateDuringOutage":               {value: "deny", get: func(c serveConfig) any { return c.PrivateDuringOutage }, want: proxy.OutageDeny},
		"upstream": {value: "a.test=http://a.test", yaml: "\n  - {name: a.test, url: http://a.test}", args: []string{"--default-registry", "a.test"},
			get: func(c serveConfig) any { return upstreamList(c.Upstreams) }, want: "a.test=http://a.test"},
		"maxStaleness":              {value: "1h", get: dur(func(c serveConfig) time.Duration { return c.MaxStaleness }), want: time.Hour},
		"serveStaleOnNotFound":      {value: "true", get: func(c serveConfig) any { return c.ServeStaleOnNotFound }, want: true},
		"max-blob-size":             {value: "1MiB", get: func(c serveConfig) any { return c.MaxBlobSize }, want: int64(1 << 20)},
		"disk-reserve":              {value: "2MiB", get: func(c serveConfig) any { return c.DiskReserve }, want: int64(2 << 20)},
		"maxConcurrentFills":        {value: "4", get: func(c serveConfig) any { return c.MaxConcurrentFills }, want: 4},
		"maxConcurrentRequests":     {value: "5", get: func(c serveConfig) any { return c.MaxConcurrentRequests }, want: 5},
		"fillTimeout":               {value: "3h", get: dur(func(c serveConfig) time.Duration { return c.FillTimeout }), want: 3 * time.Hour},
		"write-stall":               {value: "7s", get: dur(func(c serveConfig) time.Duration { return c.WriteStall }), want: 7 * time.Second},
		"timeouts.dial":             {value: "1s", get: dur(func(c serveConfig) time.Duration { return c.Timeouts.Dial }), want: time.Second},
		"timeouts.tlsHandshake":     {value: "2s", get: dur(func(c serveConfig) time.Duration { return c.Timeouts.TLSHandshake }), want: 2 * time.Second},
		"timeouts.responseHeader":   {value: "3s", get: dur(func(c serveConfig) time.Duration { return c.Timeouts.ResponseHeader }), want: 3 * time.Second},
		"timeouts.revalidate":       {value: "4s", get: dur(func(c serveConfig) time.Duration { return c.Timeouts.Revalidate }), want: 4 * time.Second},
		"timeouts.request":          {value: "5s", get: dur(func(c serveConfig) time.Duration { return c.Timeouts.Request }), want: 5 * time.Second},
		"timeouts.bodyStall":        {value: "6s", get: dur(func(c serveConfig) time.Duration { return c.Timeouts.BodyStall }), want: 6 * time.Second},
		"breaker.failures":          {value: "7", get: func(c serveConfig) any { return c.Breaker.Failures }, want: 7},
		"breaker.backoff":           {value: "8s", get: dur(func(c serveConfig) time.Duration { return c.Breaker.Backoff }), want: 8 * time.Second},
		"breaker.maxBackoff":        {value: "9m", get: dur(func(c serveConfig) time.Duration { return c.Breaker.MaxBackoff }), want: 9 * time.Minute},
		"eviction.interval":         {value: "10s", get: dur(func(c serveConfig) time.Duration { return c.Eviction.Interval }), want: 10 * time.Second},
		"eviction.keepRecent":       {value: "11m", get: dur(func(c serveConfig) time.Duration { return c.Eviction.KeepRecent }), want: 11 * time.Minute},
		"eviction.keepDuringOutage": {value: "12h", get: dur(func(c serveConfig) time.Duration { return c.Eviction.KeepDuringOutage }), want: 12 * time.Hour},
		"prefetch": {yaml: "\n  - ref: docker.io/library/alpine:3.20\n    platforms: [linux/arm64]",
			get: func(c serveConfig) any { return c.Prefetch }, want: []prefetchConfig{{Ref: "docker.io/library/alpine:3.20", Platforms: []string{"linux/arm64"}}}},
		"check-containerd-hosts-dir": {value: "/etc/c", get: func(c serveConfig) any { return c.NodeCheck.ContainerdHostsDir }, want: "/etc/c"},
		"check-containerd-config":    {value: "/etc/c.toml", get: func(c serveConfig) any { return c.NodeCheck.ContainerdConfig }, want: "/etc/c.toml"},
		"check-crio-conf-dir":        {value: "/etc/r.d", get: func(c serveConfig) any { return c.NodeCheck.CRIOConfDir }, want: "/etc/r.d"},
		"check-host-root":            {value: "/host", get: func(c serveConfig) any { return c.NodeCheck.HostRoot }, want: "/host"},
		"nodeCheck.onlyIfPresent":    {value: "true", get: func(c serveConfig) any { return c.NodeCheck.OnlyIfPresent }, want: true},
		"nodeCheck.interval":         {value: "3m", get: dur(func(c serveConfig) time.Duration { return c.NodeCheck.Interval }), want: 3 * time.Minute},
		"prefetchInterval":           {value: "2h", get: dur(func(c serveConfig) time.Duration { return c.PrefetchInterval }), want: 2 * time.Hour},
	}
	maps.Copy(examples, peerSettingExamples()) // peers_test.go
	return examples
}

// serveRows is the settings table without the admin commands' own rows.
func serveRows() []setting {
	return slices.DeleteFunc(settingsTable(), func(r setting) bool { return r.adminOnly })
}

// yamlAt writes value under a dotted key: timeouts.dial -> timeouts:\n  dial: v.
func yamlAt(key, value string) string {
	parts := strings.Split(key, ".")
	var b strings.Builder
	for i, p := range parts {
		b.WriteString(strings.Repeat("  ", i) + p + ":")
		if i < len(parts)-1 {
			b.WriteString("\n")
		}
	}
	return b.String() + " " + value + "\n"
}

// TestEverySettingFromFlagEnvAndFile: each way of giving a setting lands in
// the same field.
func TestEverySettingFromFlagEnvAndFile(t *testing.T) {
	// Not parallel: sets environment variables.
	examples := settingExamples(t)
	dir := t.TempDir()
	for _, r := range serveRows() {
		ex, ok := examples[cmp.Or(r.flag, r.key)]
		require.True(t, ok, "%s has no example", r.name())
		type source struct {
			name string
			args []string
			env  bool
		}
		var sources []source
		if r.flag != "" {
			sources = append(sources, source{"flag", []string{"--" + r.flag, ex.value}, false}, source{"env", nil, true})
		}
		if r.key != "" {
			v := ex.yaml
			if v == "" {
				v = strconv.Quote(ex.value)
			}
			file := filepath.Join(dir, strings.ReplaceAll(r.key, ".", "_")+".yaml")
			require.NoError(t, os.WriteFile(file, []byte(yamlAt(r.key, v)), 0o644))
			sources = append(sources, source{"file", []string{"--config", file}, false})
		}
		for _, src := range sources {
			t.Run(r.name()+"/"+src.name, func(t *testing.T) {
				if src.env {
					t.Setenv(envName(r.flag), ex.value)
				}
				cfg, err := loadServeConfig(append(src.args, ex.args...), &bytes.Buffer{})
				require.NoError(t, err)
				assert.Equal(t, ex.want, ex.get(cfg))
			})
		}
	}
}

func TestSettingPrecedence(t *testing.T) {
	// Not parallel: sets environment variables.
	file := filepath.Join(t.TempDir(), "lifeboat.yaml")
	require.NoError(t, os.WriteFile(file, []byte("tagTTL: 1s\ndataDir: /file\n"), 0o644))
	for _, tc := range []struct {
		name      string
		file, env bool
		flag      bool
		wantTTL   time.Duration
		wantDir   string
	}{
		{name: "defaults", wantTTL: 0, wantDir: "./lifeboat-data"},
		{name: "file over defaults", file: true, wantTTL: time.Second, wantDir: "/file"},
		{name: "env over file", file: true, env: true, wantTTL: 2 * time.Second, wantDir: "/env"},
		{name: "flag over env", file: true, env: true, flag: true, wantTTL: 3 * time.Second, wantDir: "/flag"},
		{name: "flag over file", file: true, flag: true, wantTTL: 3 * time.Second, wantDir: "/flag"},
		{name: "env alone", env: true, wantTTL: 2 * time.Second, wantDir: "/env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			if tc.file {
				args = append(args, "--config", file)
			}
			if tc.env {
				t.Setenv("LIFEBOAT_TAG_TTL", "2s")
				t.Setenv("LIFEBOAT_DATA_DIR", "/env")
			}
			if tc.flag {
				args = append(args, "--tag-ttl", "3s", "--data-dir", "/flag")
			}
			cfg, err := loadServeConfig(args, &bytes.Buffer{})
			require.NoError(t, err)
			assert.Equal(t, tc.wantTTL, cfg.TagTTL)
			assert.Equal(t, tc.wantDir, cfg.DataDir)
		})
	}
	t.Run("config file from env", func(t *testing.T) {
		t.Setenv("LIFEBOAT_CONFIG", file)
		cfg, err := loadServeConfig(nil, &bytes.Buffer{})
		require.NoError(t, err)
		assert.Equal(t, "/file", cfg.DataDir)
	})
	t.Run("env error names the variable", func(t *testing.T) {
		t.Setenv("LIFEBOAT_MAX_SIZE", "lots")
		_, err := loadServeConfig(nil, &bytes.Buffer{})
		assert.EqualError(t, err, `LIFEBOAT_MAX_SIZE: "lots" is not a size like 50GiB, 500MB or 1048576`)
	})
}

// TestHelpShowsEachSetting walks the table: --help names each flag, its env
// var, its config key and its default, all taken from the one row.
func TestHelpShowsEachSetting(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	require.Equal(t, 0, run(t.Context(), []string{"serve", "--help"}, &out, &errb))
	help := errb.String()
	defaults, err := withDefaults(settingsTable())
	require.NoError(t, err, "every default parses")
	for _, r := range serveRows() {
		if r.flag != "" {
			assert.Contains(t, help, "  -"+r.flag+" ", r.flag)
			assert.Contains(t, help, "env "+envName(r.flag), r.flag)
		}
		if r.key != "" {
			assert.Regexp(t, `(config |\n  )`+regexp.QuoteMeta(r.key)+`\b`, help, r.key)
		}
		if r.def != "" {
			assert.Contains(t, help, "(default "+r.def+")", r.name())
		}
	}
	assert.Equal(t, "http://"+defaults.AdminListen, defaults.AdminURL, "the admin commands look where serve listens by default")

	for cmd, flags := range map[string][]string{
		"ls": {"data-dir", "admin"}, "gc": {"data-dir", "admin", "max-size", "min-free-disk"},
		"verify": {"data-dir", "admin"}, "prefetch": {"data-dir", "admin", "config"}, "unpin": {"data-dir", "admin"},
	} {
		errb.Reset()
		require.Equal(t, 0, run(t.Context(), []string{cmd, "--help"}, &out, &errb), cmd)
		for _, r := range settingsNamed(settingsTable(), flags...) {
			assert.Contains(t, errb.String(), "  -"+r.flag+" ", cmd)
			assert.Contains(t, errb.String(), "(env "+envName(r.flag)+")", cmd)
			if r.def != "" {
				assert.Contains(t, errb.String(), "(default "+r.def+")", cmd)
			}
		}
	}
}

func TestConfigFileErrorsNameLineAndKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct{ name, yaml, want string }{
		{"bad duration", "listen: 127.0.0.1:1\ntimeouts:\n  revalidate: abc\n", `:3: timeouts.revalidate: time: invalid duration "abc"`},
		{"duration without unit", "tagTTL: 30\n", `:1: tagTTL: time: missing unit in duration "30"`},
		{"bad size", "maxSize: lots\n", `:1: maxSize: "lots" is not a size like 50GiB, 500MB or 1048576`},
		{"bad disk floor", "minFreeDisk: 150%\n", `:1: minFreeDisk: "150%" is not a percentage from 0 to 99`},
		{"bad private policy", "privateContent: strict\n", `:1: privateContent: "strict": must be shared or verify`},
		{"bad bool", "serveStaleOnNotFound: maybe\n", `:1: serveStaleOnNotFound: "maybe" is not true or false`},
		{"bad number", "maxConcurrentFills: many\n", `:1: maxConcurrentFills: strconv.Atoi: parsing "many": invalid syntax`},
		{"unknown key", "listen: 127.0.0.1:1\nlistn: 127.0.0.1:2\n", `:2: listn: unknown key`},
		{"unknown key in a section", "breaker:\n  failure: 3\n", `:2: breaker.failure: unknown key`},
		{"unknown key in an upstream", "upstreams:\n  - name: a.test\n    url: http://a.test\n    tagTtl: 1s\n", `:4: upstreams[0].tagTtl: unknown key`},
		{"unknown key in an upstream's section", "upstreams:\n  - name: a.test\n    url: http://a.test\n    timeouts:\n      dail: 1s\n", `:5: upstreams[0].timeouts.dail: unknown key`},
		{"bad override in an upstream", "upstreams:\n  - name: a.test\n    url: http://a.test\n  - name: b.test\n    url: http://b.test\n    breaker: {backoff: soon}\n", `:6: upstreams[1].breaker.backoff: time: invalid duration "soon"`},
		{"upstream without url", "upstreams:\n  - name: a.test\n", `:2: upstreams[0]: needs a name and a url`},
		{"unknown key in a prefetch entry", "prefetch:\n  - ref: docker.io/library/alpine:3.20\n    pin: true\n", `:3: prefetch[0].pin: unknown key`},
		{"wrong type: value for a section", "timeouts: 5s\n", `:1: timeouts: must be a mapping of bodyStall, dial, request, responseHeader, revalidate, tlsHandshake, not a single value`},
		{"wrong type: list for a value", "listen: [a, b]\n", `:1: listen: must be a single value, not a list`},
		{"wrong type: value for a list", "upstreams: docker.io\n", `:1: upstreams: must be a list, not a single value`},
		{"wrong type: list of values for entries", "upstreams:\n  - docker.io\n", `:2: upstreams[0]: must be a mapping of breaker, caFile, insecureSkipVerify, maxStaleness, name, privateContent, privateDuringOutage, serveStaleOnNotFound, tagTTL, timeouts, tokenRealms, url, not a single value`},
		{"wrong type: platforms", "prefetch:\n  - ref: docker.io/library/alpine:3.20\n    platforms: linux/amd64\n", `:3: prefetch[0].platforms: must be a list, not a single value`},
		{"key set twice", "listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n", `:2: listen: set twice`},
		{"not a mapping", "- listen\n", `:1: the file must be a mapping of settings, not a list`},
		{"not YAML", "listen: a\n  b: c\n", `:2: mapping values are not allowed in this context`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			require.NoError(t, os.WriteFile(file, []byte(tc.yaml), 0o644))
			_, err := loadServeConfig([]string{"--config", file}, &bytes.Buffer{})
			assert.EqualError(t, err, file+tc.want)
		})
	}
}

// TestUpstreamOverrides: every setting an upstream entry may override is
// parsed by the top-level setting's row and lands in that upstream only.
func TestUpstreamOverrides(t *testing.T) {
	t.Parallel()
	examples := settingExamples(t)
	dir := t.TempDir()
	for _, r := range serveRows() {
		if r.perUpstream == notPerUpstream {
			continue
		}
		t.Run(r.key, func(t *testing.T) {
			ex := examples[cmp.Or(r.flag, r.key)]
			entry := "    " + strings.ReplaceAll(yamlAt(r.key, strconv.Quote(ex.value)), "\n  ", "\n      ")
			file := filepath.Join(dir, r.key+".yaml")
			require.NoError(t, os.WriteFile(file, []byte("upstreams:\n  - name: a.test\n    url: http://a.test\n  - name: b.test\n    url: http://b.test\n"+entry), 0o644))
			cfg, err := loadServeConfig([]string{"--config", file, "--default-registry", "a.test"}, &bytes.Buffer{})
			require.NoError(t, err)
			require.Len(t, cfg.Upstreams, 2)
			assert.Equal(t, ex.want, ex.get(serveConfig{upstreamSettings: cfg.Upstreams[1].upstreamSettings}), "the entry's own value")
			assert.NotEqual(t, ex.want, ex.get(serveConfig{upstreamSettings: cfg.Upstreams[0].upstreamSettings}), "the other upstream keeps the top-level value")
			assert.NotEqual(t, ex.want, ex.get(cfg), "the top-level value is unchanged")
		})
	}

	file := filepath.Join(dir, "zeros.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`
timeouts: {dial: 5s}
breaker: {failures: 4}
upstreams:
  - name: a.test
    url: http://a.test
    tagTTL: 0s
    timeouts: {dial: 0s}
    breaker: {failures: 0}
`), 0o644))
	cfg, err := loadServeConfig([]string{"--config", file, "--default-registry", "a.test", "--tag-ttl", "1m"}, &bytes.Buffer{})
	require.NoError(t, err)
	ups := cfg.proxyUpstreams()
	assert.Equal(t, time.Duration(0), ups[0].TagTTL, "an entry's tagTTL wins, zero too, even over a flag")
	assert.Equal(t, 5*time.Second, ups[0].Timeouts.Dial, "a zero timeout inherits the top-level one")
	assert.Equal(t, 4, ups[0].Breaker.Failures, "a zero breaker setting inherits the top-level one")
}

func TestAdminCommandsReadTheTable(t *testing.T) {
	// Not parallel: sets environment variables.
	dir, _ := seed(t)
	var out, errb bytes.Buffer
	t.Setenv("LIFEBOAT_DATA_DIR", dir)
	require.Equal(t, 0, run(t.Context(), []string{"verify"}, &out, &errb), errb.String())
	assert.Contains(t, out.String(), "checked 1 blobs", "LIFEBOAT_DATA_DIR names the data directory")

	out.Reset()
	t.Setenv("LIFEBOAT_MAX_SIZE", "1")
	require.Equal(t, 0, run(t.Context(), []string{"gc", "--dry-run"}, &out, &errb), errb.String())
	assert.Contains(t, out.String(), "would evict", "LIFEBOAT_MAX_SIZE caps gc")
	errb.Reset()
	t.Setenv("LIFEBOAT_MIN_FREE_DISK", "150%")
	assert.Equal(t, 1, run(t.Context(), []string{"gc", "--dry-run"}, &out, &errb))
	assert.Contains(t, errb.String(), `LIFEBOAT_MIN_FREE_DISK: "150%" is not a percentage`)
	errb.Reset()
	assert.Equal(t, 1, run(t.Context(), []string{"gc", "--dry-run", "--min-free-disk", "oops"}, &out, &errb))
	assert.Contains(t, errb.String(), `--min-free-disk: "oops" is not a size`, "the flag wins over the env var")

	// A lifeboat holds the data directory: the command asks its admin API,
	// found through LIFEBOAT_ADMIN.
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		assert.Equal(t, "/admin/images", r.URL.Path)
		_, _ = io.WriteString(w, "[]")
	}))
	defer srv.Close()
	s, err := cache.Open(dir, cache.Options{})
	require.NoError(t, err)
	defer s.Close()
	t.Setenv("LIFEBOAT_ADMIN", srv.URL)
	out.Reset()
	require.Equal(t, 0, run(t.Context(), []string{"ls", "-o", "json"}, &out, &errb), errb.String())
	assert.JSONEq(t, "[]", out.String())
	assert.Equal(t, int32(1), asked.Load())
	errb.Reset()
	assert.Equal(t, 1, run(t.Context(), []string{"ls", "--admin", "http://127.0.0.1:1"}, &out, &errb))
	assert.Contains(t, errb.String(), "no lifeboat answers on --admin http://127.0.0.1:1", "the flag wins over the env var")

	t.Setenv("LIFEBOAT_DATA_DIR", "")
	errb.Reset()
	assert.Equal(t, 1, run(t.Context(), []string{"ls"}, &out, &errb))
	assert.Contains(t, errb.String(), "--data-dir must not be empty")
}

// TestDocsConfigLoads: the config file docs/configuration.md shows is one
// lifeboat takes.
func TestDocsConfigLoads(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/configuration.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(doc), "## The config file\n")
	require.True(t, ok)
	_, block, ok := strings.Cut(section, "```yaml\n")
	require.True(t, ok)
	block, _, ok = strings.Cut(block, "```")
	require.True(t, ok)
	file := filepath.Join(t.TempDir(), "lifeboat.yaml")
	require.NoError(t, os.WriteFile(file, []byte(block), 0o644))
	cfg, err := loadServeConfig([]string{"--config", file}, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, int64(50<<30), cfg.MaxSize)
	require.Len(t, cfg.Upstreams, 3)
	assert.Equal(t, 500*time.Millisecond, cfg.Upstreams[2].Timeouts.Revalidate)
	assert.Equal(t, 1500*time.Millisecond, cfg.Upstreams[0].Timeouts.Revalidate)
	assert.Equal(t, []string{"linux/amd64", "linux/arm64"}, cfg.Prefetch[1].Platforms)
}

func TestUpstreamTokenRealms(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`
upstreams:
  - name: a.test
    url: https://a.test
  - name: b.test
    url: https://b.test
    tokenRealms: [auth.b.test, "login.b.test:8443"]
  - name: c.test
    url: https://c.test
    tokenRealms: []
defaultRegistry: a.test
`), 0o644))
	cfg, err := loadServeConfig([]string{"--config", file}, &bytes.Buffer{})
	require.NoError(t, err)
	ups := cfg.proxyUpstreams()
	require.Len(t, ups, 3)
	assert.Nil(t, ups[0].TokenRealms, "absent: the registry's defaults")
	assert.Equal(t, []string{"auth.b.test", "login.b.test:8443"}, ups[1].TokenRealms)
	assert.Equal(t, []string{}, ups[2].TokenRealms, "an empty list: only the registry's own host")

	require.NoError(t, os.WriteFile(file, []byte("upstreams:\n  - name: a.test\n    url: https://a.test\n    tokenRealms: [[x]]\ndefaultRegistry: a.test\n"), 0o644))
	_, err = loadServeConfig([]string{"--config", file}, &bytes.Buffer{})
	require.ErrorContains(t, err, "c.yaml:4: upstreams[0].tokenRealms: must be host or host:port")
}

func TestDefaultRegistryFollowsTheUpstreams(t *testing.T) {
	cfg, err := loadServeConfig([]string{"--upstream", "local.test=http://127.0.0.1:5001"}, &bytes.Buffer{})
	require.NoError(t, err, "a single --upstream is the default registry")
	assert.Equal(t, "local.test", cfg.DefaultRegistry)

	cfg, err = loadServeConfig(nil, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "docker.io", cfg.DefaultRegistry, "docker.io when it is mirrored")

	_, err = loadServeConfig([]string{"--upstream", "a.test=http://127.0.0.1:1", "--upstream", "b.test=http://127.0.0.1:2"}, &bytes.Buffer{})
	require.ErrorContains(t, err, "no --default-registry, and docker.io is not among the upstreams: set --default-registry to one of a.test, b.test")

	_, err = loadServeConfig([]string{"--upstream", "a.test=http://127.0.0.1:1", "--default-registry", "c.test"}, &bytes.Buffer{})
	require.ErrorContains(t, err, `--default-registry "c.test" is not among the upstreams: set --default-registry to one of a.test`)
}
