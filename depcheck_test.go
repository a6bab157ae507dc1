package lifeboat_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestImportsPointDown enforces the layering: registry → proxy → cache, and
// cache knows nothing of HTTP, metrics or upstreams.
func TestImportsPointDown(t *testing.T) {
	t.Parallel()
	const mod = "github.com/lifeboat-dev/lifeboat/"
	for _, tc := range []struct {
		pkg   string
		trans bool // check every transitive dependency, not only direct imports
		bad   []string
	}{
		{"cache", true, []string{mod, "net/http", "github.com/prometheus/", "log/slog"}},
		{"proxy", false, []string{mod + "registry", mod + "cmd", "go.etcd.io/bbolt"}},
		{"registry", false, []string{mod + "cache", mod + "cmd", "go.etcd.io/bbolt"}},
	} {
		args := []string{"list", "-f", "{{join .Imports \"\\n\"}}", "./" + tc.pkg}
		if tc.trans {
			args = []string{"list", "-deps", "./" + tc.pkg}
		}
		out, err := exec.Command("go", args...).Output()
		require.NoError(t, err)
		pkg, bad := tc.pkg, tc.bad
		for _, d := range strings.Fields(string(out)) {
			if d == mod+pkg {
				continue
			}
			for _, b := range bad {
				assert.False(t, d == b || strings.HasPrefix(d, b), "%s must not import %s", pkg, d)
			}
		}
	}
}
