package lifeboat_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const mod = "github.com/lifeboat-dev/lifeboat/"

// allowed lists, per package, every import outside the standard library
// it may have (a trailing / allows a module's packages). Imports point
// down: registry → proxy → upstream, cache; maintenance and peers beside
// registry (peers: client-go's REST client and informer only, never the
// clientset, which registers every API group);
// nodeconfig and cache are leaves; internal/logtext (clipping what a log
// line echoes) is a leaf any of them may use. A new dependency is a decision, taken
// here, as go-containerregistry's AssertOnlyDependencies makes it.
var allowed = map[string][]string{
	"cache":      {"github.com/opencontainers/go-digest", "go.etcd.io/bbolt/"},
	"nodeconfig": {"github.com/pelletier/go-toml/v2/"},
	"upstream": {
		mod + "internal/logtext", "github.com/google/go-containerregistry/pkg/authn", "github.com/google/go-containerregistry/pkg/name",
		"github.com/google/go-containerregistry/pkg/v1/remote/transport",
		"github.com/prometheus/client_golang/prometheus", "golang.org/x/sync/singleflight",
	},
	"credentials": {
		"github.com/docker/cli/cli/config/", "github.com/docker/docker-credential-helpers/",
		"github.com/google/go-containerregistry/pkg/authn", "github.com/google/go-containerregistry/pkg/name",
		"github.com/prometheus/client_golang/prometheus", "go.yaml.in/yaml/v3",
		"k8s.io/apimachinery/pkg/apis/meta/v1", "k8s.io/kubelet/config/v1", "k8s.io/kubelet/pkg/apis/credentialprovider/v1",
	},
	"proxy": {
		mod + "cache", mod + "upstream", "github.com/opencontainers/go-digest", "github.com/prometheus/client_golang/prometheus",
		"golang.org/x/sync/singleflight",
	},
	"maintenance": {
		mod + "cache", mod + "proxy", mod + "upstream", "github.com/distribution/reference",
		"github.com/opencontainers/go-digest", "github.com/prometheus/client_golang/prometheus",
	},
	"peers": {
		mod + "cache", mod + "proxy", mod + "upstream", "github.com/distribution/reference",
		"github.com/google/go-containerregistry/pkg/authn", "github.com/opencontainers/go-digest",
		"github.com/prometheus/client_golang/prometheus",
		"k8s.io/api/discovery/v1", "k8s.io/apimachinery/pkg/", "k8s.io/client-go/rest", "k8s.io/client-go/tools/cache",
	},
	"registry": {
		mod + "internal/logtext", mod + "proxy", mod + "upstream", "github.com/distribution/reference",
		"github.com/opencontainers/go-digest", "github.com/prometheus/client_golang/prometheus",
	},
}

// forbidden lists what a package must not reach even transitively: the
// store and the node-config writer know nothing of HTTP, metrics or logs.
var forbidden = map[string][]string{
	"cache":      {"net/http", "github.com/prometheus/", "log/slog"},
	"nodeconfig": {"net/http", "github.com/prometheus/"},
}

func TestImportsAreAllowed(t *testing.T) {
	t.Parallel()
	for pkg, allow := range allowed {
		out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, "./"+pkg).Output()
		require.NoError(t, err, pkg)
		for _, imp := range strings.Fields(string(out)) {
			if !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
				continue // the standard library
			}
			ok := slices.ContainsFunc(allow, func(a string) bool {
				return imp == a || imp == strings.TrimSuffix(a, "/") || (strings.HasSuffix(a, "/") && strings.HasPrefix(imp, a))
			})
			assert.True(t, ok, "%s imports %s, which is not in its allowlist (depcheck_test.go)", pkg, imp)
		}
	}
}

func TestForbiddenDependencies(t *testing.T) {
	t.Parallel()
	for pkg, bad := range forbidden {
		out, err := exec.Command("go", "list", "-deps", "./"+pkg).Output()
		require.NoError(t, err, pkg)
		for _, d := range strings.Fields(string(out)) {
			for _, b := range bad {
				assert.False(t, d == b || strings.HasPrefix(d, b), "%s must not depend on %s", pkg, d)
			}
		}
	}
}

// TestEveryPackageIsChecked: a new package gets an allowlist.
func TestEveryPackageIsChecked(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "./...").Output()
	require.NoError(t, err)
	for _, p := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(p, mod)
		if p == strings.TrimSuffix(mod, "/") || strings.HasPrefix(rel, "cmd/") || strings.HasPrefix(rel, "internal/") {
			continue
		}
		_, ok := allowed[rel]
		assert.True(t, ok, "package %s has no import allowlist in depcheck_test.go", rel)
	}
}
